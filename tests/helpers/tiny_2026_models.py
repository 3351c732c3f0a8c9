"""Tiny random-weight pipelines of the 2026 families for tests, built offline and saved to disk.

Real diffusers pipelines at toy sizes, sharing tiny_flow_models.py's 16-channel VAE and T5 (its
tokenizer made in code):

* ``build_tiny_chroma(folder)``: ``ChromaPipeline`` (a FLUX.1-like ``ChromaTransformer2DModel`` with its
  small modulation approximator, T5 only, FLUX.1's VAE factors).
"""

from __future__ import annotations

import os

import torch

from helpers.tiny_flow_models import T5_DIM, _save, _t5, _vae, t5_tokenizer

__all__ = ["build_tiny_chroma", "write_tiny_chroma_lora"]


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


def write_tiny_chroma_lora(pipe_folder: str | os.PathLike, out_path: str | os.PathLike, seed: int = 0,
                           rank: int = 4) -> str:
    """A diffusers-format LoRA (.safetensors) for a saved tiny Chroma's transformer (attention projections;
    random non-zero A and B, so it changes the output). Its keys carry FLUX.1's block names."""
    import warnings

    from diffusers import ChromaPipeline, ChromaTransformer2DModel
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    transformer = ChromaTransformer2DModel.from_pretrained(os.fspath(pipe_folder), subfolder="transformer")
    torch.manual_seed(seed)
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                       target_modules=["to_q", "to_k", "to_v"]), transformer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        layers = get_peft_model_state_dict(transformer)
    out = os.fspath(out_path)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    ChromaPipeline.save_lora_weights(os.path.dirname(out) or ".", transformer_lora_layers=layers,
                                     weight_name=os.path.basename(out))
    return out
