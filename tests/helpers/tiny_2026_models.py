"""Tiny random-weight pipelines of the 2026 families for tests, built offline and saved to disk.

Real diffusers pipelines at toy sizes, sharing tiny_flow_models.py's 16-channel VAE and T5 (its
tokenizer made in code):

* ``build_tiny_chroma(folder)``: ``ChromaPipeline`` (a FLUX.1-like ``ChromaTransformer2DModel`` with its
  small modulation approximator, T5 only, FLUX.1's VAE factors).
* ``build_tiny_z_image(folder)``: ``ZImagePipeline`` (a ``ZImageTransformer2DModel`` of one layer, a tiny
  random ``Qwen3Model`` text encoder, FLUX.1's VAE factors).
* ``build_tiny_qwen_image(folder)``: ``QwenImagePipeline`` (a one-block ``QwenImageTransformer2DModel``, a
  tiny random Qwen2.5-VL text encoder, a small ``AutoencoderKLQwenImage`` of scale 8 with Qwen-Image's
  latent means and deviations).
* ``build_tiny_flux2_klein(folder, distilled=True)``: ``Flux2KleinPipeline`` (a one-double, one-single block
  ``Flux2Transformer2DModel``, a 28-layer tiny ``Qwen3ForCausalLM`` whose layers 9, 18 and 27 the pipeline
  stacks, a small ``AutoencoderKLFlux2``); ``distilled``: a step-distilled Klein (no CFG), else a base one.

``chat_tokenizer()`` is the Qwen text encoders' tokenizer made in code: a character-level Unigram model
with Qwen's chat tokens and a ChatML chat template (the pipelines wrap prompts in it), no files needed.
"""

from __future__ import annotations

import os

import torch

from helpers.tiny_flow_models import T5_DIM, _save, _t5, _vae, t5_tokenizer

__all__ = ["build_tiny_chroma", "build_tiny_flux2_klein", "build_tiny_qwen_image", "build_tiny_z_image", "chat_tokenizer", "write_tiny_lora"]

QWEN_DIM = 32
_CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                  "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def build_tiny_chroma(folder: str | os.PathLike) -> str:
    """Save a tiny Chroma pipeline (one double and one single block, 2 heads of 16)."""
    from diffusers import ChromaPipeline, ChromaTransformer2DModel, FlowMatchEulerDiscreteScheduler

    torch.manual_seed(0)
    transformer = ChromaTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=T5_DIM, axes_dims_rope=(4, 6, 6), approximator_num_channels=8,
        approximator_hidden_dim=32, approximator_layers=1)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    pipe = ChromaPipeline(transformer=transformer, scheduler=scheduler, vae=_vae(0.3611, 0.1159), text_encoder=_t5(),
                          tokenizer=t5_tokenizer())
    return _save(pipe, os.fspath(folder))


def write_tiny_lora(pipe_folder: str | os.PathLike, out_path: str | os.PathLike, seed: int = 0, rank: int = 4,
                    extra: tuple[str, ...] = (), gain: float = 1.0) -> str:
    """A diffusers-format LoRA (.safetensors) for a saved tiny pipeline's transformer (its attention
    projections to_q/to_k/to_v and the ``extra`` modules; random non-zero A and B, B times ``gain``, so it changes
    the output),
    saved by the pipeline class's own ``save_lora_weights`` (Chroma's keys carry FLUX.1's block names,
    Z-Image's its refiners', Qwen-Image's its img_mlp with ``extra=("img_mlp.net.2",)``)."""
    import json
    import warnings

    import diffusers
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    folder = os.fspath(pipe_folder)
    with open(os.path.join(folder, "model_index.json"), encoding="utf-8") as f:
        index = json.load(f)
    transformer = getattr(diffusers, index["transformer"][1]).from_pretrained(folder, subfolder="transformer")
    torch.manual_seed(seed)
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                       target_modules=["to_q", "to_k", "to_v", *extra]), transformer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        layers = get_peft_model_state_dict(transformer)
    layers = {k: v * gain if "lora_B" in k else v for k, v in layers.items()}
    out = os.fspath(out_path)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    getattr(diffusers, index["_class_name"]).save_lora_weights(
        os.path.dirname(out) or ".", transformer_lora_layers=layers, weight_name=os.path.basename(out))
    return out


def chat_tokenizer():
    """A PreTrainedTokenizerFast over characters with Qwen's chat tokens (pad ``<|endoftext|>``, id 0)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]
    chars = [chr(c) for c in range(32, 127)] + ["\n", "\u2581"]
    vocab = [(t, 0.0) for t in specials] + [(c, -1.0) for c in chars]
    tok = Tokenizer(models.Unigram(vocab, unk_id=3, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    out = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>",
                                  unk_token="<unk>", additional_special_tokens=specials[1:3], model_max_length=512)
    out.chat_template = _CHAT_TEMPLATE
    return out


def _qwen3():
    from transformers import Qwen3Config, Qwen3Model

    torch.manual_seed(0)
    return Qwen3Model(Qwen3Config(vocab_size=len(chat_tokenizer()), hidden_size=QWEN_DIM, intermediate_size=37,
                                  num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, head_dim=16,
                                  max_position_embeddings=1024))


def build_tiny_z_image(folder: str | os.PathLike) -> str:
    """Save a tiny Z-Image pipeline (one main and one refiner layer, 2 heads of 16)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel

    torch.manual_seed(0)
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32, n_layers=1, n_refiner_layers=1,
        n_heads=2, n_kv_heads=2, cap_feat_dim=QWEN_DIM, axes_dims=[4, 6, 6], axes_lens=[512, 64, 64])
    pipe = ZImagePipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                          vae=_vae(0.3611, 0.1159), text_encoder=_qwen3(), tokenizer=chat_tokenizer())
    return _save(pipe, os.fspath(folder))


def _qwen25_vl(vocab_size: int | None = None, **token_ids: int):
    """A tiny random Qwen2.5-VL (one text layer 32 wide, one vision block); ``vocab_size`` and the vision tokens'
    ``token_ids`` (``image_token_id`` …) for a tokenizer with those tokens (tiny_qwen_edit.py)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text = {"vocab_size": vocab_size or len(chat_tokenizer()), "hidden_size": QWEN_DIM, "intermediate_size": 37,
            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2, "bos_token_id": 1,
            "eos_token_id": 2, "max_position_embeddings": 2048,
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}}
    vision = {"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": QWEN_DIM,
              "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "fullatt_block_indexes": [0]}
    torch.manual_seed(0)
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, vocab_size=text["vocab_size"], bos_token_id=1,
                              eos_token_id=2, **token_ids)
    return Qwen2_5_VLForConditionalGeneration(config)


def build_tiny_qwen_image(folder: str | os.PathLike) -> str:
    """Save a tiny Qwen-Image pipeline (one block of 2 heads of 16; a 4-level VAE, scale 8)."""
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )

    torch.manual_seed(0)
    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=64, out_channels=16, num_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=QWEN_DIM, axes_dims_rope=(4, 6, 6))
    torch.manual_seed(0)
    vae = AutoencoderKLQwenImage(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                                 temperal_downsample=[False, True, True])
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9,
                                                base_image_seq_len=256, max_image_seq_len=8192, shift_terminal=0.02)
    pipe = QwenImagePipeline(transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=_qwen25_vl(),
                             tokenizer=chat_tokenizer())
    return _save(pipe, os.fspath(folder))


def build_tiny_flux2_klein(folder: str | os.PathLike, *, distilled: bool = True) -> str:
    """Save a tiny FLUX.2 Klein pipeline (prompt embeddings: 3 text layers of 16 stacked, 48 wide)."""
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinPipeline,
        Flux2Transformer2DModel,
    )
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=128, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=48, timestep_guidance_channels=32, axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=False)
    torch.manual_seed(0)
    vae = AutoencoderKLFlux2(block_out_channels=(8, 16, 16, 16), layers_per_block=1, latent_channels=32,
                             norm_num_groups=4, sample_size=64)
    torch.manual_seed(0)
    text_encoder = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=len(chat_tokenizer()), hidden_size=16, intermediate_size=17, num_hidden_layers=28,
        num_attention_heads=2, num_key_value_heads=2, head_dim=8, max_position_embeddings=1024))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    pipe = Flux2KleinPipeline(transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=text_encoder,
                              tokenizer=chat_tokenizer(), is_distilled=distilled)
    return _save(pipe, os.fspath(folder))
