"""Models folders in the layouts painters have (A1111/Forge, ComfyUI, the folder above, flat), filled
with real tiny models: single files with their config folders, diffusers folders, LoRAs, a ControlNet,
a VAE, and broken files (truncated, still being copied, an unknown architecture, corrupt).

``build_layout(root, layout, assets)`` returns {what: path} for the entries it wrote; ``assets``
comes from ``make_assets`` (built once per session from the tiny models).
"""

from __future__ import annotations

import os
import shutil
import struct
import time
from pathlib import Path

from helpers.tiny_models import (
    build_tiny_controlnet,
    build_tiny_sd,
    config_only_copy,
    write_single_file,
    write_tiny_lora,
)

LAYOUTS = ("a1111", "comfyui", "above", "flat")  # the folder given to Easel: models/ of A1111, of ComfyUI,
# a ComfyUI install (the folder above its models/), a flat folder
# where each kind goes: checkpoints, diffusers folders, LoRAs, ControlNets, VAEs
FOLDERS = {"a1111": ("Stable-diffusion", "Stable-diffusion", "Lora", "ControlNet", "VAE"),
           "comfyui": ("checkpoints", "diffusers", "loras", "controlnet", "vae"),
           "above": ("models/checkpoints", "models/diffusers", "models/loras", "models/controlnet", "models/vae"),
           "flat": ("", "", "", "", "")}
OLD = time.time() - 3600  # an hour ago: a truncated file, not one being copied


def make_assets(tiny_sd_path: str, tiny_sdxl_path: str, root: Path) -> dict[str, str]:
    """Single files, an inpainting model, LoRAs, a ControlNet and a VAE made from the tiny models."""
    from safetensors.torch import load_file, save_file

    from helpers.tiny_single_file import vae_to_ldm

    root.mkdir(parents=True, exist_ok=True)
    inpaint = build_tiny_sd(root / "tiny-inpaint", inpaint_unet=True)
    vae_state = load_file(os.path.join(tiny_sd_path, "vae", "diffusion_pytorch_model.safetensors"))
    vae_ldm = {k.removeprefix("first_stage_model."): v for k, v in vae_to_ldm(vae_state, {"block_out_channels": [8] * 4}).items()}
    save_file({k: v.contiguous() for k, v in vae_ldm.items()}, str(root / "tiny-vae.safetensors"))
    return {
        "sd": tiny_sd_path, "sdxl": tiny_sdxl_path, "inpaint": inpaint,
        "sd_file": write_single_file(tiny_sd_path, root / "sd.safetensors"),
        "sdxl_file": write_single_file(tiny_sdxl_path, root / "sdxl.safetensors"),
        "inpaint_file": write_single_file(inpaint, root / "inpaint.safetensors"),
        "lora_sd": write_tiny_lora(tiny_sd_path, root / "lora-sd.safetensors", seed=5),
        "lora_xl": write_tiny_lora(tiny_sdxl_path, root / "lora-xl.safetensors", seed=6),
        "controlnet": build_tiny_controlnet(tiny_sd_path, root / "controlnet"),
        "vae": str(root / "tiny-vae.safetensors"),
    }


def build_layout(root: Path, layout: str, assets: dict[str, str]) -> dict[str, Path]:
    """Fill ``root`` (the folder Easel is given) in ``layout``; returns each entry's path by a short name."""
    ckpt, diffusers_dir, loras, controlnets, vaes = (root / p if p else root for p in FOLDERS[layout])
    out: dict[str, Path] = {}

    def single(name: str, src: str, config_from: str, sub: str = "", config_name: str | None = None) -> None:
        folder = ckpt / sub
        folder.mkdir(parents=True, exist_ok=True)
        out[name] = Path(shutil.copy(src, folder / f"{name}.safetensors"))
        config_only_copy(config_from, folder / (config_name or name))

    single("dreamshaper_tiny", assets["sd_file"], assets["sd"])
    single("juggernaut_xl", assets["sdxl_file"], assets["sdxl"], sub="sdxl")
    single("inpaint_tiny", assets["inpaint_file"], assets["inpaint"], config_name="inpaint_tiny.config")
    diffusers_dir.mkdir(parents=True, exist_ok=True)
    out["sd_folder"] = Path(shutil.copytree(assets["sd"], diffusers_dir / "sd-folder"))
    out["xl_folder"] = Path(shutil.copytree(assets["sdxl"], diffusers_dir / "xl-folder"))
    for name, key, folder in (("ink", "lora_sd", loras), ("ink_xl", "lora_xl", loras)):
        folder.mkdir(parents=True, exist_ok=True)
        out[name] = Path(shutil.copy(assets[key], folder / f"{name}.safetensors"))
    controlnets.mkdir(parents=True, exist_ok=True)
    out["scribble"] = Path(shutil.copytree(assets["controlnet"], controlnets / "scribble"))
    vaes.mkdir(parents=True, exist_ok=True)
    out["vae"] = Path(shutil.copy(assets["vae"], vaes / "tiny-vae.safetensors"))
    out.update(write_broken(ckpt, assets))
    if layout == "above":  # a ComfyUI install folder: only its models/ is searched, never the rest
        junk = root / "venv" / "lib"
        junk.mkdir(parents=True)
        shutil.copy(assets["sd_file"], junk / "not-a-model.safetensors")
        (root / "main.py").write_text("# ComfyUI\n")
    return out


def write_broken(folder: Path, assets: dict[str, str]) -> dict[str, Path]:
    """A truncated file (old), one still being copied (fresh), an unknown architecture, a corrupt file."""
    data = Path(assets["sd_file"]).read_bytes()
    truncated = folder / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    os.utime(truncated, (OLD, OLD))
    copying = folder / "copying.safetensors"
    copying.write_bytes(data[: len(data) // 3])
    corrupt = folder / "corrupt.safetensors"
    corrupt.write_bytes(struct.pack("<Q", 40) + b"{this is not json at all.............}" + b"\0" * 100)
    os.utime(corrupt, (OLD, OLD))
    flux = folder / "flux_like.safetensors"
    write_safetensors(flux, {"model.diffusion_model.input_blocks.0.0.weight": (4, 4, 3, 3),
                             "model.diffusion_model.double_blocks.0.img_attn.qkv.weight": (12, 4)})
    return {"truncated": truncated, "copying": copying, "corrupt": corrupt, "flux_like": flux}


def write_safetensors(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    """A valid safetensors file of zero-filled F16 tensors with these names and shapes."""
    import torch
    from safetensors.torch import save_file

    save_file({k: torch.zeros(s, dtype=torch.float16) for k, s in shapes.items()}, str(path))
    return path
