"""Model families and their defaults, detected from configs (and names, for few-step variants).

Families: ``sd1`` (SD 1.x, CLIP-L 768), ``sd2`` (SD 2.x, OpenCLIP 1024), ``sdxl``, ``demo``, and the
flow-matching transformers ``sd3`` (SD 3 / 3.5) and ``flux`` (FLUX.1); their defaults are in FLOW_DEFAULTS.
Few-step variants change the defaults: ``turbo`` (1 step, guidance 0), ``lightning`` (4 steps,
guidance 0) and ``lcm`` (4 steps, guidance 1; 8 when the UNet embeds guidance).
Native size = ``unet.sample_size * vae_scale_factor`` (vae_scale_factor = 2 ** (VAE blocks - 1)).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from .types import EngineError

FAMILY_DEFAULTS: dict[str, tuple[int, float]] = {
    "sd1": (20, 7.5), "sd2": (20, 7.5), "sdxl": (25, 6.0), "demo": (20, 7.5)}
VARIANT_DEFAULTS: dict[str, tuple[int, float]] = {"turbo": (1, 0.0), "lightning": (4, 0.0), "lcm": (4, 1.0)}
SD_CLASSES = {
    "StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline",
    "LatentConsistencyModelPipeline", "LatentConsistencyModelImg2ImgPipeline"}
SDXL_CLASSES = {"StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLInpaintPipeline"}
SD3_CLASSES = {"StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline", "StableDiffusion3InpaintPipeline"}
FLUX_CLASSES = {"FluxPipeline", "FluxImg2ImgPipeline", "FluxInpaintPipeline"}
FLOW_FAMILIES = ("sd3", "flux")
# (steps, guidance) per flow-matching model, as their model cards recommend: SD 3 medium 28 / 7.0,
# SD 3.5 large 28 / 3.5, SD 3.5 medium 40 / 4.5, large-turbo 4 / 0 (no CFG); FLUX.1-dev 28 steps with
# distilled guidance 3.5 (an embedding, one transformer pass per step), schnell 4 steps without guidance.
FLOW_DEFAULTS: dict[str, tuple[int, float]] = {
    "sd3": (28, 7.0), "sd3.5-large": (28, 3.5), "sd3.5-medium": (40, 4.5), "sd3.5-turbo": (4, 0.0),
    "flux-dev": (28, 3.5), "flux-schnell": (4, 0.0)}


@dataclass(frozen=True)
class Traits:
    """What the engine needs to know about a model before and after loading it."""

    family: str
    native: tuple[int, int]
    default_steps: int
    default_guidance: float
    variant: str | None = None  # "turbo" | "lightning" | "lcm" | a FLOW_DEFAULTS key | None
    inpaint_unet: bool = False  # 9-channel inpainting UNet
    vae_scale: int = 8
    context: int | None = None  # the UNet's cross-attention width (LoRAs must match it)

    @property
    def few_step(self) -> bool:
        return self.variant in VARIANT_DEFAULTS or self.variant in ("flux-schnell", "sd3.5-turbo")

    @property
    def flow(self) -> bool:
        """A flow-matching transformer (SD3, Flux): its own scheduler, 16-channel latents."""
        return self.family in FLOW_FAMILIES

    @property
    def size_step(self) -> int:
        """Sizes must be multiples of this: the VAE's scale, times the transformer's 2x2 patches for SD3/Flux."""
        return self.vae_scale * 2 if self.flow else self.vae_scale


Config = dict[str, Any]


# Request fields (power features) a model may or may not support; the welcome lists each model's own.
FEATURES = ("negative_prompt", "scheduler", "loras", "control_model", "variation_seed", "refiner")
_UNSUPPORTED = {
    "sd3": {"scheduler": "SD 3/3.5 runs its own flow-matching scheduler",
            "control_model": "the sketch ControlNets are SD 1.x/2.x/SDXL ControlNets",
            "refiner": "the refiner is SDXL's"},
    "flux": {"negative_prompt": "FLUX.1 is guidance-distilled and has no negative prompt",
             "scheduler": "FLUX.1 runs its own flow-matching scheduler",
             "control_model": "the sketch ControlNets are SD 1.x/2.x/SDXL ControlNets",
             "refiner": "the refiner is SDXL's"},
}


def model_features(traits: Traits) -> list[str]:
    """The FEATURES a model of these traits supports (the refiner only on SDXL)."""
    missing = _UNSUPPORTED.get(traits.family, {})
    return [f for f in FEATURES if f not in missing and (f != "refiner" or traits.family == "sdxl")]


def unsupported(traits: Traits, feature: str) -> str | None:
    """Why a model of these traits cannot use ``feature`` (None: it can)."""
    if feature == "refiner" and traits.family != "sdxl":
        return _UNSUPPORTED.get(traits.family, {}).get(feature, "the refiner is SDXL's")
    return _UNSUPPORTED.get(traits.family, {}).get(feature)


def read_json(path: str) -> Config | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def folder_configs(folder: str) -> tuple[Config | None, Config | None, Config | None, Config | None]:
    """model_index, unet, vae and scheduler configs of a diffusers folder (None where missing)."""
    return (read_json(os.path.join(folder, "model_index.json")),
            read_json(os.path.join(folder, "unet", "config.json"))
            or read_json(os.path.join(folder, "transformer", "config.json")),
            read_json(os.path.join(folder, "vae", "config.json")),
            read_json(os.path.join(folder, "scheduler", "scheduler_config.json")))


def check_supported(index: Config | None, name: str) -> None:
    cls = (index or {}).get("_class_name")
    if cls is not None and cls not in SD_CLASSES | SDXL_CLASSES | SD3_CLASSES | FLUX_CLASSES:
        raise EngineError(
            f"model {name!r} is a {cls}; Easel serves Stable Diffusion 1.x/2.x, SDXL (including turbo/LCM/"
            "lightning variants), SD 3/3.5 and FLUX.1 pipelines. Pick such a model.", field="model",
            code="model_load_failed")


def detect(name: str, index: Config | None, unet: Config | None, vae: Config | None,
           scheduler: Config | None) -> Traits:
    """Family, native size and defaults from configs; falls back to the name where configs are missing."""
    index, unet, vae, scheduler = index or {}, unet or {}, vae or {}, scheduler or {}
    lname = name.lower()
    cls = str(index.get("_class_name", ""))
    if not (index or unet):
        return guess(name)
    if cls in SD3_CLASSES | FLUX_CLASSES:
        return flow_traits(lname, cls, unet, vae)
    if cls in SDXL_CLASSES or _present(index, "text_encoder_2") or unet.get("addition_embed_type") == "text_time":
        family = "sdxl"
    elif unet.get("cross_attention_dim") == 1024:
        family = "sd2"
    else:
        family = "sd1"
    blocks = vae.get("block_out_channels") or [0, 0, 0, 0]
    vae_scale = 2 ** (len(blocks) - 1)
    size = unet.get("sample_size") or {"sdxl": 128, "sd2": 96}.get(family, 64)
    h, w = (size, size) if isinstance(size, int) else (size[0], size[1])
    variant = variant_of(lname, cls, scheduler)
    steps, guidance = VARIANT_DEFAULTS[variant] if variant else FAMILY_DEFAULTS[family]
    if variant == "lcm" and unet.get("time_cond_proj_dim"):
        guidance = 8.0  # LCM-distilled UNets take guidance as an embedding, not as CFG
    context = unet.get("cross_attention_dim")
    return Traits(family, (w * vae_scale, h * vae_scale), steps, guidance, variant,
                  unet.get("in_channels") == 9, vae_scale, context if isinstance(context, int) else None)


def flow_traits(lname: str, cls: str, transformer: Config, vae: Config) -> Traits:
    """SD3/Flux traits from the transformer config (``unet`` in detect's arguments) and the name."""
    blocks = vae.get("block_out_channels") or [0, 0, 0, 0]
    vae_scale = 2 ** (len(blocks) - 1)
    if cls in FLUX_CLASSES:
        # schnell has no guidance embedding; Flux pipelines default to 128 latent px (1024)
        variant = "flux-dev" if transformer.get("guidance_embeds", True) else "flux-schnell"
        return Traits("flux", (1024, 1024), *FLOW_DEFAULTS[variant], variant, False, vae_scale, None)
    size = int(transformer.get("sample_size") or 128) * vae_scale
    variant = sd3_variant(lname)
    return Traits("sd3", (size, size), *FLOW_DEFAULTS[variant or "sd3"], variant, False, vae_scale, None)


def sd3_variant(lname: str) -> str | None:
    """SD 3.5 large / medium / large-turbo from a name; None for SD 3 (medium)."""
    if "3.5" in lname or "3-5" in lname or "sd35" in lname:
        if "turbo" in lname:
            return "sd3.5-turbo"
        return "sd3.5-medium" if "medium" in lname else "sd3.5-large"
    return "sd3.5-turbo" if "turbo" in lname else None


def guess(name: str) -> Traits:
    """Best guess from a name alone (hub models not yet downloaded); corrected after loading."""
    lname = name.lower()
    if "flux" in lname:
        variant = "flux-schnell" if "schnell" in lname else "flux-dev"
        return Traits("flux", (1024, 1024), *FLOW_DEFAULTS[variant], variant)
    if "stable-diffusion-3" in lname or "sd3" in lname or "sd35" in lname:
        variant = sd3_variant(lname)
        return Traits("sd3", (1024, 1024), *FLOW_DEFAULTS[variant or "sd3"], variant)
    variant = variant_of(lname, "", {})
    if "xl" in lname:
        family, native = "sdxl", 512 if variant == "turbo" else 1024
    elif any(tag in lname for tag in ("2-1", "2.1", "2-0", "sd2", "v2", "sd-turbo")):
        family, native = "sd2", 512 if variant == "turbo" or "base" in lname else 768
    else:
        family, native = "sd1", 512
    steps, guidance = VARIANT_DEFAULTS[variant] if variant else FAMILY_DEFAULTS[family]
    return Traits(family, (native, native), steps, guidance, variant, "inpaint" in lname)


def variant_of(lname: str, cls: str, scheduler: Config) -> str | None:
    if "turbo" in lname:
        return "turbo"
    if "lightning" in lname:
        return "lightning"
    if "lcm" in lname or cls.startswith("LatentConsistency") or scheduler.get("_class_name") == "LCMScheduler":
        return "lcm"
    return None


def _present(index: Config, key: str) -> bool:
    value = index.get(key)
    return isinstance(value, (list, tuple)) and len(value) == 2 and value[0] is not None
