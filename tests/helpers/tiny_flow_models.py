"""Tiny random-weight SD3/3.5 and FLUX.1 pipelines for tests, built offline and saved to disk.

Real diffusers pipelines (SD3Transformer2DModel / FluxTransformer2DModel, a 16-channel AutoencoderKL
with SD3/Flux's scaling and shift factors, CLIP text encoders and a T5 encoder) at toy sizes:

* ``build_tiny_sd3(folder, t5=True)``: two CLIP encoders (with projection) + T5; transformer
  sample_size 8, so the native size is 64 px (a real SD3's 1024, smaller). ``t5=False`` saves it
  without ``text_encoder_3`` (as diffusers allows).
* ``build_tiny_flux(folder, guidance=True, fill=False)``: CLIP + T5; ``guidance=True`` embeds the distilled
  guidance like FLUX.1-dev, ``False`` is schnell-like (no guidance embedding).
  ``fill=True``: FLUX.1 Fill-like (a FluxFillPipeline whose transformer takes the packed latents, 64
  channels, plus the masked image's, 64, and the mask's, 8x8 px per latent packed: 256; 384 in all).
* ``build_tiny_flux_controlnet(pipe, folder, union=False)`` / ``build_tiny_sd3_controlnet(pipe, folder)``:
  random ControlNets for those (one block each; ``union``: 7 control modes like InstantX's union) whose
  zero-initialised layers (``controlnet_blocks``, the control image's embedder) get random weights, so they steer.

The CLIP tokenizer is the hand-written one of tiny_models.py; T5's is a ``tokenizers`` Unigram model
(one piece per character, ``</s>`` appended) wrapped in ``T5TokenizerFast``: no sentencepiece needed.
"""

from __future__ import annotations

import os
import shutil

import torch

from helpers.tiny_models import _text_config, _tokenizer

__all__ = ["build_tiny_sd3", "build_tiny_flux", "build_tiny_flux_controlnet", "build_tiny_sd3_controlnet", "t5_tokenizer",
           "T5_DIM"]

T5_DIM = 64


def t5_tokenizer():
    """A T5TokenizerFast over a character-level Unigram model (pad 0, eos 1, unk 2, as T5's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    chars = [chr(c) for c in range(33, 127)] + ["\u2581"]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(c, -1.0) for c in chars]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                           extra_ids=0, model_max_length=512)


def _t5():
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    return T5EncoderModel(T5Config(vocab_size=len(t5_tokenizer()), d_model=T5_DIM, d_kv=8, d_ff=37, num_layers=1,
                                   num_heads=2, relative_attention_num_buckets=8, decoder_start_token_id=0))


def _vae(scaling: float, shift: float):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(block_out_channels=[8, 16, 16, 16], in_channels=3, out_channels=3, latent_channels=16,
                         down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                         layers_per_block=1, norm_num_groups=4, sample_size=64, use_quant_conv=False,
                         use_post_quant_conv=False, scaling_factor=scaling, shift_factor=shift)


def _save(pipe, folder: str) -> str:
    os.makedirs(folder, exist_ok=True)
    pipe.save_pretrained(folder)
    shutil.rmtree(folder + ".tok", ignore_errors=True)
    return folder


def build_tiny_sd3(folder: str | os.PathLike, *, t5: bool = True) -> str:
    """Save a tiny SD3-style pipeline (CLIP-L/G-like 32-d encoders with projection, T5 64-d)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    folder = os.fspath(folder)
    tok = _tokenizer(folder + ".tok")
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=8,
        num_attention_heads=4, joint_attention_dim=T5_DIM, caption_projection_dim=32, pooled_projection_dim=64,
        pos_embed_max_size=16)
    torch.manual_seed(0)
    te1 = CLIPTextModelWithProjection(_text_config(tok, projection_dim=32))
    torch.manual_seed(1)
    te2 = CLIPTextModelWithProjection(_text_config(tok, projection_dim=32))
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_vae(1.5305, 0.0609), text_encoder=te1, tokenizer=tok, text_encoder_2=te2, tokenizer_2=tok,
        text_encoder_3=_t5() if t5 else None, tokenizer_3=t5_tokenizer() if t5 else None)
    return _save(pipe, folder)


def build_tiny_flux(folder: str | os.PathLike, *, guidance: bool = True, fill: bool = False) -> str:
    """Save a tiny FLUX.1-style pipeline (dev-like with ``guidance``, else schnell-like; ``fill``: FLUX.1 Fill-like)."""
    import diffusers
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextModel

    folder = os.fspath(folder)
    tok = _tokenizer(folder + ".tok")
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=384 if fill else 64, out_channels=64 if fill else None, num_layers=1,
        num_single_layers=1, attention_head_dim=16, num_attention_heads=2, joint_attention_dim=T5_DIM,
        pooled_projection_dim=32, guidance_embeds=guidance,
        axes_dims_rope=[4, 6, 6])
    torch.manual_seed(0)
    te = CLIPTextModel(_text_config(tok))
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=guidance, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
        max_image_seq_len=4096)
    cls = diffusers.FluxFillPipeline if fill else diffusers.FluxPipeline
    pipe = cls(transformer=transformer, scheduler=scheduler, vae=_vae(0.3611, 0.1159), text_encoder=te,
                        tokenizer=tok, text_encoder_2=_t5(), tokenizer_2=t5_tokenizer())
    return _save(pipe, folder)


def _steering(net, parts: tuple[str, ...], folder: str | os.PathLike) -> str:
    """Save ``net`` with random weights in its zero-initialised ``parts`` (else it adds nothing)."""
    for part in parts:
        for param in getattr(net, part).parameters():
            torch.nn.init.normal_(param, std=0.2)
    net.save_pretrained(os.fspath(folder))
    return os.fspath(folder)


def build_tiny_flux_controlnet(pipe_folder: str | os.PathLike, folder: str | os.PathLike, seed: int = 0,
                               union: bool = False) -> str:
    """Save a tiny FluxControlNetModel for a saved tiny FLUX.1 pipeline (InstantX-style: the control image
    goes through the VAE; ``union``: with 7 control modes)."""
    from diffusers import FluxControlNetModel, FluxTransformer2DModel

    transformer = FluxTransformer2DModel.from_pretrained(os.fspath(pipe_folder), subfolder="transformer")
    torch.manual_seed(seed)
    config = {k: v for k, v in transformer.config.items() if k != "out_channels"}
    net = FluxControlNetModel.from_config({**config, "num_layers": 1, "num_single_layers": 1,
                                           "num_mode": 7 if union else None})
    if union:  # the mode is one token among the prompt's 512: sharper attention lets it show in the picture
        for name, module in net.named_modules():
            if name.endswith(("norm_q", "norm_k", "norm_added_q", "norm_added_k")):
                module.weight.data.mul_(6.0)
    return _steering(net, ("controlnet_blocks", "controlnet_single_blocks", "controlnet_x_embedder"), folder)


def build_tiny_sd3_controlnet(pipe_folder: str | os.PathLike, folder: str | os.PathLike, seed: int = 0) -> str:
    """Save a tiny SD3ControlNetModel (one joint block) for a saved tiny SD3 pipeline."""
    from diffusers import SD3ControlNetModel, SD3Transformer2DModel

    transformer = SD3Transformer2DModel.from_pretrained(os.fspath(pipe_folder), subfolder="transformer")
    torch.manual_seed(seed)
    net = SD3ControlNetModel.from_config({**transformer.config, "num_layers": 1})
    return _steering(net, ("controlnet_blocks", "pos_embed_input"), folder)


def write_tiny_flow_lora(pipe_folder: str | os.PathLike, out_path: str | os.PathLike, seed: int = 0,
                         rank: int = 4) -> str:
    """A diffusers-format LoRA (.safetensors) for a saved tiny SD3 or Flux pipeline's transformer
    (attention projections; random non-zero A and B, so it changes the output)."""
    import warnings

    import diffusers
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    folder = os.fspath(pipe_folder)
    flux = os.path.isdir(os.path.join(folder, "text_encoder_2")) and not os.path.isdir(
        os.path.join(folder, "text_encoder_3")) and not os.path.isdir(os.path.join(folder, "tokenizer_3"))
    cls = diffusers.FluxPipeline if flux else diffusers.StableDiffusion3Pipeline
    model_cls = diffusers.FluxTransformer2DModel if flux else diffusers.SD3Transformer2DModel
    transformer = model_cls.from_pretrained(folder, subfolder="transformer")
    torch.manual_seed(seed)
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                       target_modules=["to_q", "to_k", "to_v"]), transformer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        layers = get_peft_model_state_dict(transformer)
    out = os.fspath(out_path)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    cls.save_lora_weights(os.path.dirname(out) or ".", transformer_lora_layers=layers, weight_name=os.path.basename(out))
    return out


def write_sd3_transformer_file(pipe_folder: str | os.PathLike, out_path: str | os.PathLike) -> str:
    """The saved tiny SD3's transformer as an original-layout (``model.diffusion_model.joint_blocks…``)
    single file, as the SD 3/3.5 files people download hold it: the exact inverse of diffusers'
    ``convert_sd3_transformer_checkpoint_to_diffusers`` for models without dual attention or qk-norm."""
    from diffusers import SD3Transformer2DModel
    from safetensors.torch import save_file

    sd = SD3Transformer2DModel.from_pretrained(os.fspath(pipe_folder), subfolder="transformer").state_dict()
    layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("transformer_blocks."))

    def swap(t: torch.Tensor) -> torch.Tensor:  # shift/scale halves (its own inverse)
        a, b = t.chunk(2, dim=0)
        return torch.cat([b, a], dim=0)

    out: dict[str, torch.Tensor] = {"pos_embed": sd["pos_embed.pos_embed"]}
    names = {"x_embedder.proj": "pos_embed.proj", "t_embedder.mlp.0": "time_text_embed.timestep_embedder.linear_1",
             "t_embedder.mlp.2": "time_text_embed.timestep_embedder.linear_2", "context_embedder": "context_embedder",
             "y_embedder.mlp.0": "time_text_embed.text_embedder.linear_1",
             "y_embedder.mlp.2": "time_text_embed.text_embedder.linear_2", "final_layer.linear": "proj_out"}
    for i in range(layers):
        b, x, c = f"transformer_blocks.{i}.", f"joint_blocks.{i}.x_block.", f"joint_blocks.{i}.context_block."
        last = i == layers - 1
        for part in ("weight", "bias"):
            out[x + f"attn.qkv.{part}"] = torch.cat([sd[b + f"attn.to_{n}.{part}"] for n in "qkv"])
            out[c + f"attn.qkv.{part}"] = torch.cat([sd[b + f"attn.add_{n}_proj.{part}"] for n in "qkv"])
            ctx_mod = sd[b + f"norm1_context.linear.{part}"]
            out[c + f"adaLN_modulation.1.{part}"] = swap(ctx_mod) if last else ctx_mod
        names.update({x + "attn.proj": b + "attn.to_out.0", x + "adaLN_modulation.1": b + "norm1.linear",
                      x + "mlp.fc1": b + "ff.net.0.proj", x + "mlp.fc2": b + "ff.net.2"})
        if not last:
            names.update({c + "attn.proj": b + "attn.to_add_out", c + "mlp.fc1": b + "ff_context.net.0.proj",
                          c + "mlp.fc2": b + "ff_context.net.2"})
    for orig, ours in names.items():
        for part in ("weight", "bias"):
            out[orig + "." + part] = sd[ours + "." + part]
    for part in ("weight", "bias"):
        out[f"final_layer.adaLN_modulation.1.{part}"] = swap(sd[f"norm_out.linear.{part}"])
    out = {"model.diffusion_model." + k: v.contiguous() for k, v in out.items()}
    save_file(out, os.fspath(out_path))
    return os.fspath(out_path)
