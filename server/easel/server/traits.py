"""What Easel knows about one model (``Traits``), detected from its diffusers configs, else its name.

The family comes from the pipeline class and the UNet config (families.py says what each family can
do); few-step variants (``turbo``, ``lightning``, ``lcm``; SD 3.5 large/medium/turbo; FLUX.1 dev or
schnell) change the defaults. Native size = ``unet.sample_size * vae_scale_factor`` (vae_scale_factor
= 2 ** (VAE blocks - 1)). Pure json reads: the engine and the library both use it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from .families import FEW_STEP, VARIANTS, Family

# pipeline classes Easel serves: each family's, plus the LCM pipelines (SD 1.x-style)
LCM_CLASSES = frozenset({"LatentConsistencyModelPipeline", "LatentConsistencyModelImg2ImgPipeline"})
# inpainting models' own pipeline classes (FLUX.1 Fill: image + mask in, every mode through this one pipeline)
INPAINT_CLASSES = {"FluxFillPipeline": Family.FLUX}
SUPPORTED_CLASSES = LCM_CLASSES.union(INPAINT_CLASSES, *(f.pipeline_classes for f in Family if f.served))


# words in a hub id that name a family (before its configs are downloaded), the first family that matches: the
# Qwen-Image-Edit releases after the first (Qwen-Image-Edit-2509, -2511: dated) are Plus models
_NAMED = {Family.CHROMA: ("chroma",), Family.Z_IMAGE: ("z-image", "z_image", "zimage"),
          Family.QWEN_IMAGE_EDIT_PLUS: ("qwen-image-edit-2", "qwen_image_edit_2", "qwen-image-edit-plus"),
          Family.QWEN_IMAGE_EDIT: ("qwen-image-edit", "qwen_image_edit"),
          Family.QWEN_IMAGE: ("qwen-image", "qwen_image", "qwenimage"),
          Family.FLUX2_KLEIN: ("flux.2-klein", "flux2-klein", "flux-2-klein", "flux2_klein")}


@dataclass(frozen=True)
class Traits:
    """What the engine needs to know about a model before and after loading it."""

    family: Family
    native: tuple[int, int]
    default_steps: int
    default_guidance: float
    variant: str | None = None  # "turbo" | "lightning" | "lcm" | a flow variant (families.VARIANTS) | None
    inpaint_unet: bool = False  # an inpainting model: 9-channel SD UNet or FLUX.1 Fill (image + mask channels)
    vae_scale: int = 8
    context: int | None = None  # the UNet's cross-attention width (LoRAs must match it)

    def __post_init__(self) -> None:
        object.__setattr__(self, "family", Family(self.family))  # a plain "sdxl" becomes Family.SDXL

    @property
    def few_step(self) -> bool:
        return self.variant in FEW_STEP

    @property
    def flow(self) -> bool:
        """A flow-matching transformer (SD3, Flux): its own scheduler, 16-channel latents."""
        return self.family.flow

    @property
    def size_step(self) -> int:
        """Sizes must be multiples of this: the VAE's scale, times the transformer's 2x2 patches for SD3/Flux."""
        return self.family.size_step(self.vae_scale)


Config = dict[str, Any]


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


def detect(name: str, index: Config | None, unet: Config | None, vae: Config | None,
           scheduler: Config | None) -> Traits:
    """Family, native size and defaults from configs; falls back to the name where configs are missing."""
    index, unet, vae, scheduler = index or {}, unet or {}, vae or {}, scheduler or {}
    lname = name.lower()
    cls = str(index.get("_class_name", ""))
    if not (index or unet):
        return guess(name)
    by_class = Family.of_pipeline(cls) or INPAINT_CLASSES.get(cls)
    if by_class is not None and by_class.flow:
        return flow_traits(lname, by_class, unet, vae)
    if by_class is Family.SDXL or _present(index, "text_encoder_2") or unet.get("addition_embed_type") == "text_time":
        family = Family.SDXL
    else:
        family = Family.SD2 if unet.get("cross_attention_dim") == Family.SD2.context else Family.SD1
    vae_scale = _vae_scale(vae)
    size = unet.get("sample_size") or family.native // 8
    h, w = (size, size) if isinstance(size, int) else (size[0], size[1])
    variant = variant_of(lname, cls, scheduler)
    steps, guidance = family.defaults(variant)
    if variant == "lcm" and unet.get("time_cond_proj_dim"):
        guidance = 8.0  # LCM-distilled UNets take guidance as an embedding, not as CFG
    context = unet.get("cross_attention_dim")
    return Traits(family, (w * vae_scale, h * vae_scale), steps, guidance, variant,
                  unet.get("in_channels") == 9, vae_scale, context if isinstance(context, int) else None)


def flow_traits(lname: str, family: Family, transformer: Config, vae: Config) -> Traits:
    """SD3/Flux traits from the transformer config (``unet`` in detect's arguments) and the name."""
    vae_scale = _vae_scale(vae)
    if family is Family.FLUX:
        # schnell has no guidance embedding; Flux pipelines default to 128 latent px (1024)
        # FLUX.1 Fill: packed image latents (64 channels) plus the masked image's and the mask's
        fill = int(transformer.get("in_channels") or 64) > 4 * family.latent_channels
        variant = "flux-fill" if fill else "flux-dev" if transformer.get("guidance_embeds", True) else "flux-schnell"
        return Traits(family, (family.native, family.native), *family.defaults(variant), variant, fill, vae_scale)
    if family is not Family.SD3:  # the 2026 families and Kontext: their pipelines default to the native size
        variant = named_variant(family, lname)
        return Traits(family, (family.native, family.native), *family.defaults(variant), variant, False, vae_scale)
    size = int(transformer.get("sample_size") or family.native // 8) * vae_scale
    variant = sd3_variant(lname)
    return Traits(family, (size, size), *family.defaults(variant), variant, False, vae_scale)


def named_variant(family: Family, lname: str) -> str | None:
    """The 2026 families' variant a name says: ``VARIANTS`` key ``<family>-<word>`` with the word in the name
    (else the family's default variant)."""
    prefix = f"{family.value}-"
    return next((v for v in VARIANTS if v.startswith(prefix) and v[len(prefix):] in lname), family.default_variant)


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
    named = next((f for f in _NAMED if any(word in lname for word in _NAMED[f])), None)
    if named is not None:
        variant = named_variant(named, lname)
        return Traits(named, (named.native,) * 2, *named.defaults(variant), variant)
    if "flux" in lname and "kontext" in lname:  # black-forest-labs/FLUX.1-Kontext-dev
        return Traits(Family.FLUX_KONTEXT, (Family.FLUX_KONTEXT.native,) * 2, *Family.FLUX_KONTEXT.defaults())
    if "flux" in lname:  # black-forest-labs/FLUX.1-Fill-dev: the inpainting model
        variant = "flux-fill" if "fill" in lname else "flux-schnell" if "schnell" in lname else "flux-dev"
        return Traits(Family.FLUX, (Family.FLUX.native,) * 2, *Family.FLUX.defaults(variant), variant,
                      variant == "flux-fill")
    if "stable-diffusion-3" in lname or "sd3" in lname or "sd35" in lname:
        variant = sd3_variant(lname)
        return Traits(Family.SD3, (Family.SD3.native,) * 2, *Family.SD3.defaults(variant), variant)
    variant = variant_of(lname, "", {})
    turbo = variant == "turbo"  # SD-Turbo and SDXL-Turbo run at 512
    if "xl" in lname:
        family, native = Family.SDXL, 512 if turbo else Family.SDXL.native
    elif any(tag in lname for tag in ("2-1", "2.1", "2-0", "sd2", "v2", "sd-turbo")):
        family, native = Family.SD2, Family.SD2.native_for(v_prediction=not (turbo or "base" in lname))
    else:
        family, native = Family.SD1, Family.SD1.native
    return Traits(family, (native, native), *family.defaults(variant), variant, "inpaint" in lname)


def variant_of(lname: str, cls: str, scheduler: Config) -> str | None:
    if "turbo" in lname:
        return "turbo"
    if "lightning" in lname:
        return "lightning"
    if "lcm" in lname or cls.startswith("LatentConsistency") or scheduler.get("_class_name") == "LCMScheduler":
        return "lcm"
    return None


def _vae_scale(vae: Config) -> int:
    blocks = vae.get("block_out_channels") or [0, 0, 0, 0]
    return 2 ** (len(blocks) - 1)


def _present(index: Config, key: str) -> bool:
    value = index.get(key)
    return isinstance(value, (list, tuple)) and len(value) == 2 and value[0] is not None
