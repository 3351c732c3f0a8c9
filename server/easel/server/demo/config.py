"""The demo model's architecture as plain JSON, and building/saving its components from it.

The committed ``weights/easel-demo.json`` holds constructor arguments for every component
(``AutoencoderKL``, ``UNet2DConditionModel``, ``CLIPTextConfig``, the scheduler) plus the
tokenizer's word list; ``weights/easel-demo.safetensors`` holds one flat state dict with
``vae.``, ``unet.`` and ``text_encoder.`` prefixes, stored as fp16. Loading builds each
component with its class constructor and loads its state dict strictly, so it does not depend
on how a transformers or diffusers version lays out a saved folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel

from . import shapes
from .tokenizer import make_tokenizer, vocab_size

FORMAT = 1
CONFIG_NAME = "easel-demo.json"
WEIGHTS_NAME = "easel-demo.safetensors"
COMPONENTS = ("vae", "unet", "text_encoder")

#: The noise schedule the UNet was trained with (SD's own), shared by every inference scheduler.
NOISE_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon", "steps_offset": 1,
}


def default_config(words: list[str] | None = None) -> dict[str, Any]:
    """The architecture a fresh training run builds (a 64 px image is an 8x8x4 latent)."""
    words = list(words or shapes.WORDS)
    n_vocab = vocab_size(words)
    return {
        "format": FORMAT,
        "native": shapes.SIZE,
        "tokenizer": {"words": words, "model_max_length": 32},
        "text_encoder": {
            "vocab_size": n_vocab, "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": 32, "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5, "projection_dim": 64,
            "bos_token_id": n_vocab - 2, "eos_token_id": n_vocab - 1, "pad_token_id": n_vocab - 1,
        },
        "vae": {
            "in_channels": 3, "out_channels": 3, "latent_channels": 4, "sample_size": shapes.SIZE,
            "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
            "block_out_channels": [8, 16, 32, 64], "layers_per_block": 1, "norm_num_groups": 8,
            "act_fn": "silu", "scaling_factor": 1.0,
        },
        "unet": {
            "sample_size": shapes.SIZE // 8, "in_channels": 4, "out_channels": 4,
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
            "mid_block_type": "UNetMidBlock2DCrossAttn",
            "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
            "block_out_channels": [64, 96], "layers_per_block": 1, "attention_head_dim": 8,
            "cross_attention_dim": 64, "norm_num_groups": 32, "norm_eps": 1e-5, "act_fn": "silu",
            "flip_sin_to_cos": True, "freq_shift": 0,
        },
        "scheduler": {"class": "DPMSolverMultistepScheduler", "kwargs": dict(NOISE_SCHEDULE)},
        "defaults": {"steps": 20, "guidance": 5.0},
        "preview": None,
        "training": {},
    }


def make_scheduler(spec: dict[str, Any]):
    """Build a diffusers scheduler from ``{"class": name, "kwargs": {...}}``."""
    import diffusers

    return getattr(diffusers, spec["class"])(**spec["kwargs"])


def build_components(cfg: dict[str, Any]) -> dict[str, Any]:
    """Fresh (randomly initialised) components from a config: vae, unet, text_encoder, tokenizer, scheduler."""
    if cfg.get("format") != FORMAT:
        raise ValueError(f"demo model config format {cfg.get('format')!r} is not {FORMAT}")
    tok = make_tokenizer(cfg["tokenizer"]["words"], cfg["tokenizer"]["model_max_length"])
    te = CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"]))
    return {
        "vae": AutoencoderKL(**cfg["vae"]),
        "unet": UNet2DConditionModel(**cfg["unet"]),
        "text_encoder": te,
        "tokenizer": tok,
        "scheduler": make_scheduler(cfg["scheduler"]),
    }


def match_text_encoder_keys(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Bridge transformers' CLIP key layouts: ``text_model.``-prefixed (v4) or flat (v5)."""
    if set(state) == expected:
        return state
    p = "text_model."
    if all(k.startswith(p) for k in state):
        return {k[len(p):]: v for k, v in state.items()}
    return {p + k: v for k, v in state.items()}


def save_weights(folder: str | Path, cfg: dict[str, Any], modules: dict[str, torch.nn.Module]) -> tuple[Path, Path]:
    """Write the JSON config and one fp16 safetensors file for the three trained modules."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    flat: dict[str, torch.Tensor] = {}
    for name in COMPONENTS:
        for key, value in modules[name].state_dict().items():
            flat[f"{name}.{key}"] = value.detach().to("cpu", torch.float16).contiguous()
    wpath, cpath = folder / WEIGHTS_NAME, folder / CONFIG_NAME
    save_file(flat, str(wpath), metadata={"format": str(FORMAT), "model": "easel-demo"})
    cpath.write_text(json.dumps(cfg, indent=1) + "\n", encoding="utf-8")
    return wpath, cpath


def load_weights(modules: dict[str, torch.nn.Module], path: str | Path) -> None:
    """Load the safetensors file into built modules (strict; fp16 is cast to each module's dtype)."""
    flat = load_file(str(path))
    for name in COMPONENTS:
        module = modules[name]
        prefix = name + "."
        part = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
        expected = set(module.state_dict())
        if name == "text_encoder":
            part = match_text_encoder_keys(part, expected)
        dtype = next(module.parameters()).dtype
        module.load_state_dict({k: v.to(dtype) for k, v in part.items()}, strict=True)


def read_config(folder: str | Path) -> dict[str, Any]:
    """Read ``easel-demo.json`` from a weights folder."""
    return json.loads((Path(folder) / CONFIG_NAME).read_text(encoding="utf-8"))
