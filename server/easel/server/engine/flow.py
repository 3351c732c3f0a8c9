"""Helpers for the flow-matching transformer families (SD 3/3.5 and FLUX.1).

Flux works on *packed* latents: the (B, 16, h, w) noise is cut into 2x2 patches and laid out as a
sequence (B, h/2 * w/2, 64) before the transformer sees it. Previews and the variation blend need
the spatial form, so these helpers pack and unpack with the pipeline's own static methods.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image

from ...client.codes import ErrorCode
from ..library.header import GGUF_SUFFIX
from .types import EngineError

_PACKED = ("Flux", "Chroma", "QwenImage")  # pipelines (FLUX.1's and those like it) that pack 2x2 latent patches


def is_flux(pipe: Any) -> bool:
    """A FLUX.1-style pipeline (FLUX.1, Chroma, Qwen-Image): packed latents, inpainting that always re-noises
    (not FLUX.2's, which packs otherwise)."""
    name = type(pipe).__name__
    return name.startswith(_PACKED) and not name.startswith("Flux2")


def fill_config(pipe: Any) -> None:
    """Add config values that diffusers' pipelines read but a model class lacks: ChromaInpaintPipeline
    (diffusers 0.42) reads ``transformer.config.guidance_embeds``, which Chroma's transformer has no
    field for (it embeds no guidance): False, what the pipeline then does."""
    transformer = getattr(pipe, "transformer", None)
    if type(transformer).__name__.startswith("Chroma") and "guidance_embeds" not in transformer.config:
        transformer.register_to_config(guidance_embeds=False)


def in_channels(pipe: Any) -> int:
    """The denoiser's input channels (UNet or transformer)."""
    denoiser = getattr(pipe, "unet", None) or pipe.transformer
    return int(denoiser.config.in_channels)


def spatial_latents(pipe: Any, latents: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """(B, C, h, w) latents for a preview: Flux's packed sequence unpacked (Qwen-Image's one-frame video
    latents without their frame axis), others as they are."""
    if latents.ndim == 3 and is_flux(pipe):
        latents = pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)
    elif latents.ndim == 3 and hasattr(pipe, "_unpatchify_latents"):  # FLUX.2: as its pipelines decode them
        scale = int(pipe.vae_scale_factor) * 2
        grid = latents.transpose(1, 2).reshape(len(latents), -1, height // scale, width // scale)  # row-major tokens
        bn = pipe.vae.bn
        std = torch.sqrt(bn.running_var + pipe.vae.config.batch_norm_eps).view(1, -1, 1, 1)
        latents = pipe._unpatchify_latents(grid * std.to(grid) + bn.running_mean.view(1, -1, 1, 1).to(grid))
    return latents.flatten(1, 2) if latents.ndim == 5 else latents


def packer(pipe: Any, width: int, height: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Flux's packing of (B, C, h, w) noise, as its pipelines pack it; None for other pipelines."""
    if not is_flux(pipe):
        return None
    scale = int(pipe.vae_scale_factor) * 2

    def pack(latents: torch.Tensor) -> torch.Tensor:
        if latents.ndim == 5:  # Qwen-Image's one-frame video latents: (B, 1, C, h, w)
            latents = latents.flatten(1, 2)
        b, c = latents.shape[:2]
        return pipe._pack_latents(latents, b, c, 2 * (height // scale), 2 * (width // scale))

    return pack


def run_rounded(run: Callable[[Any], list[Image.Image]], job: Any, step: int) -> list[Image.Image]:
    """Run ``job`` (sides multiples of 8, not of ``step``) at its sides rounded up to multiples of ``step``,
    and scale the results back: SD3/Flux need multiples of 16, the server's regions are multiples of 8.
    Image and mask are scaled up (bicubic) by at most 8 px per side; results come back with Lanczos."""
    w, h = -(-job.width // step) * step, -(-job.height // step) * step
    resized = {k: getattr(job, k).resize((w, h), Image.Resampling.BICUBIC)
               for k in ("image", "mask", "control_image") if getattr(job, k) is not None}
    images = run(dataclasses.replace(job, width=w, height=h, **resized))
    out = []
    for img in images:
        back = img.resize((job.width, job.height), Image.Resampling.LANCZOS)
        back.info["easel"] = {**img.info["easel"], "run_size": [w, h]}
        out.append(back)
    return out


def gguf_config(dtype: torch.dtype) -> Any:
    """diffusers' GGUF quantization config computing in ``dtype``; EngineError naming the package if missing."""
    from diffusers.utils import is_gguf_available

    if not is_gguf_available():
        raise EngineError("GGUF files need the 'gguf' package: pip install gguf", field="model",
                          code=ErrorCode.MODEL_LOAD_FAILED)
    from diffusers import GGUFQuantizationConfig

    return GGUFQuantizationConfig(compute_dtype=dtype)


def load_transformer_file(path: str, folder: str, dtype: torch.dtype, **kwargs: Any) -> Any:
    """An SD3/Flux pipeline whose transformer comes from the single file ``path`` (original or diffusers
    key layout, converted by diffusers' ``from_single_file``) and whose other parts (text encoders, VAE,
    scheduler, tokenizers) from the diffusers folder ``folder`` of the same model; the folder's own
    transformer weights are not read and may be missing. A ``.gguf`` file's quantised weights stay
    quantised (diffusers' GGUF quantizer dequantises each layer's weights as it runs, in ``dtype``).
    ``kwargs`` go to ``from_pretrained``."""
    import diffusers

    from ..traits import read_json

    index = read_json(f"{folder}/model_index.json") or {}
    cls = getattr(diffusers, str((index.get("transformer") or [None, "SD3Transformer2DModel"])[1]))
    quantised = {"quantization_config": gguf_config(dtype)} if path.lower().endswith(GGUF_SUFFIX) else {}
    transformer = cls.from_single_file(path, config=folder, subfolder="transformer", torch_dtype=dtype, **quantised)
    return diffusers.DiffusionPipeline.from_pretrained(folder, transformer=transformer, torch_dtype=dtype, **kwargs)
