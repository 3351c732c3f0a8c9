"""Tiny random IP-Adapters and a tiny CLIP image encoder that stock diffusers loads (``load_ip_adapter``).

``build_tiny_ip_adapter_repo(pipe_folders, root)`` lays them out as h94/IP-Adapter does: ``models/`` (SD 1.x
files) and ``sdxl_models/`` (SDXL files), each with an ``image_encoder/`` folder; an adapter's state dict
matches the tiny UNet of its pipeline folder (one ``to_k_ip``/``to_v_ip`` pair per cross-attention
processor, numbered 1, 3, 5 … in the UNet's processor order, as diffusers reads them).
"""

from __future__ import annotations

import os

import torch

ENCODER = {"hidden_size": 32, "intermediate_size": 37, "projection_dim": 16, "num_hidden_layers": 2,
           "num_attention_heads": 4, "image_size": 32, "patch_size": 8}
TOKENS = 4  # the image tokens diffusers' ImageProjection makes


def build_tiny_image_encoder(folder: str | os.PathLike, seed: int = 0, **config: object) -> str:
    """A saved tiny CLIPVisionModelWithProjection (config.json + model.safetensors); ``config`` overrides ``ENCODER``."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    CLIPVisionModelWithProjection(CLIPVisionConfig(**{**ENCODER, **config})).save_pretrained(folder)
    return str(folder)


def tiny_ip_adapter_state(unet_config: dict, seed: int = 0, scale: float = 0.5) -> dict[str, torch.Tensor]:
    """A plain IP-Adapter state dict (h94's flat keys) for a UNet of ``unet_config``."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(unet_config)
    ctx, widths = unet.config.cross_attention_dim, list(unet.config.block_out_channels)
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * scale

    state = {"image_proj.proj.weight": rand(TOKENS * ctx, ENCODER["projection_dim"]),
             "image_proj.proj.bias": rand(TOKENS * ctx), "image_proj.norm.weight": 1 + rand(ctx),
             "image_proj.norm.bias": rand(ctx)}
    key = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        block = int(name.split(".")[1]) if not name.startswith("mid_block") else -1
        width = widths[-1] if block < 0 else (widths[::-1] if name.startswith("up_blocks") else widths)[block]
        state[f"ip_adapter.{key}.to_k_ip.weight"] = rand(width, ctx)
        state[f"ip_adapter.{key}.to_v_ip.weight"] = rand(width, ctx)
        key += 2
    return state


def write_tiny_ip_adapter(pipe_folder: str | os.PathLike, path: str | os.PathLike, seed: int = 0) -> str:
    """A tiny plain IP-Adapter ``.safetensors`` for the UNet of the pipeline folder ``pipe_folder``."""
    import json

    from safetensors.torch import save_file

    with open(os.path.join(pipe_folder, "unet", "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    save_file(tiny_ip_adapter_state(config, seed), os.fspath(path))
    return os.fspath(path)


def build_tiny_ip_adapter_repo(root: str | os.PathLike, sd: str | os.PathLike | None = None,
                               sdxl: str | os.PathLike | None = None) -> str:
    """h94/IP-Adapter's layout with tiny files: ``models/`` for the SD pipeline folder ``sd``, ``sdxl_models/``
    for ``sdxl``: ``ip-adapter…`` (reference, style, composition) and ``ip-adapter-plus-face…`` (face)
    adapters and an ``image_encoder/`` each."""
    for folder, pipe, suffix in (("models", sd, "sd15"), ("sdxl_models", sdxl, "sdxl_vit-h")):
        if pipe is None:
            continue
        base = os.path.join(root, folder)
        build_tiny_image_encoder(os.path.join(base, "image_encoder"))
        write_tiny_ip_adapter(pipe, os.path.join(base, f"ip-adapter_{suffix}.safetensors"), seed=1)
        write_tiny_ip_adapter(pipe, os.path.join(base, f"ip-adapter-plus-face_{suffix}.safetensors"), seed=2)
    return os.fspath(root)
