"""Tensor names and shapes of the REAL architectures (SD 1.5, SD 2.x, SDXL, SDXL refiner, inpainting),
built from Easel's shipped diffusers configs on the ``meta`` device (no memory for weights) and renamed
to the original checkpoint layout; LoRAs over the real UNets' attention layers; ControlNets from the shipped
ControlNet configs. For the detection tests and the library benchmark (bench/library.py)."""

from __future__ import annotations

import functools

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from easel.server.library.configs import spec
from easel.server.library.header import TensorInfo
from helpers.tiny_single_file import clip_to_ldm, controlnet_to_ldm, open_clip_to_ldm, unet_to_ldm, vae_to_ldm


def _text(config: dict):
    cls = CLIPTextModelWithProjection if config["architectures"][0].endswith("Projection") else CLIPTextModel
    return cls(CLIPTextConfig(**{k: v for k, v in config.items() if k != "architectures"}))


@functools.cache
def modules(arch: str) -> dict[str, dict[str, torch.Tensor]]:
    """Meta-device state dicts of the architecture's UNet, VAE and text encoders."""
    s = spec(arch)
    with torch.device("meta"):
        out = {"unet": UNet2DConditionModel.from_config(s["unet"]).state_dict(),
               "vae": AutoencoderKL.from_config(s["vae"]).state_dict()}
        for part in ("text_encoder", "text_encoder_2"):
            if part in s:
                out[part] = _text(s[part]).state_dict()
    return out


def checkpoint(arch: str, text_model: bool = True, parts: tuple[str, ...] = ("unet", "vae", "text"),
               dtype: str = "F16") -> dict[str, TensorInfo]:
    """Names and shapes of a real original-layout checkpoint of ``arch``."""
    m, s = modules(arch), spec(arch)
    state: dict[str, torch.Tensor] = {}
    if "unet" in parts:
        state.update(unet_to_ldm(m["unet"], s["unet"]))
    if "vae" in parts:
        state.update(vae_to_ldm(m["vae"], s["vae"]))
    if "text" in parts:
        if arch.startswith("sd1"):
            state.update(clip_to_ldm(m["text_encoder"], "cond_stage_model.transformer."))
        elif arch.startswith("sd2"):
            state.update(open_clip_to_ldm(m["text_encoder"], "cond_stage_model.model."))
        elif arch == "sdxl-refiner":
            state.update(open_clip_to_ldm(m["text_encoder_2"], "conditioner.embedders.0.model."))
        else:
            state.update(clip_to_ldm(m["text_encoder"], "conditioner.embedders.0.transformer."))
            state.update(open_clip_to_ldm(m["text_encoder_2"], "conditioner.embedders.1.model."))
    if not text_model:
        state = {k.replace(".transformer.text_model.", ".transformer."): v for k, v in state.items()}
    return {k: TensorInfo(dtype, tuple(v.shape)) for k, v in state.items()}


def kohya_lora(arch: str, rank: int = 8) -> dict[str, TensorInfo]:
    """A kohya-style LoRA over every attention projection of the real UNet (diffusers module names)."""
    out = {}
    for name, value in modules(arch)["unet"].items():
        if ".attn" in name and name.endswith(("to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight")):
            base = "lora_unet_" + name.removesuffix(".weight").replace(".", "_")
            out[base + ".lora_down.weight"] = TensorInfo("F16", (rank, value.shape[1]))
            out[base + ".lora_up.weight"] = TensorInfo("F16", (value.shape[0], rank))
            out[base + ".alpha"] = TensorInfo("F16", ())
    return out


def peft_lora(arch: str, rank: int = 4) -> dict[str, TensorInfo]:
    out = {}
    for name, value in modules(arch)["unet"].items():
        if "attn2.to_k.weight" in name or "attn2.to_v.weight" in name:
            base = "unet." + name.removesuffix(".weight")
            out[base + ".lora_A.weight"] = TensorInfo("F32", (rank, value.shape[1]))
            out[base + ".lora_B.weight"] = TensorInfo("F32", (value.shape[0], rank))
    return out


def control_modules(arch: str, **changes) -> dict[str, torch.Tensor]:
    """Meta-device state dict of the shipped ControlNet config ``arch`` (``changes``: other config values)."""
    from diffusers import ControlNetModel, ControlNetUnionModel

    cls = ControlNetUnionModel if "union" in arch else ControlNetModel
    with torch.device("meta"):
        return cls.from_config({**spec(arch)["controlnet"], **changes}).state_dict()


def controlnet(arch: str, original: bool = True, prefix: str = "", **changes) -> dict[str, TensorInfo]:
    """Names and shapes of a real ControlNet file of ``arch``: original layout (keys under ``prefix``) or diffusers."""
    state = control_modules(arch, **changes)
    if original:
        state = controlnet_to_ldm(state, {**spec(arch)["controlnet"], **changes}, prefix)
    return {k: TensorInfo("F16", tuple(v.shape)) for k, v in state.items()}
