"""The built-in demo model: load it as a stock ``StableDiffusionPipeline``, offline.

``load_pipeline()`` builds every component with its class constructor from the committed
``weights/easel-demo.json`` and loads ``weights/easel-demo.safetensors`` into it (fp16 on disk,
cast to ``dtype``). ``StableDiffusionImg2ImgPipeline.from_pipe(pipe)`` and
``StableDiffusionInpaintPipeline.from_pipe(pipe)`` give the other two modes (pass height and
width to the inpaint pipeline). The model's native size is 64x64: generate there and upscale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import StableDiffusionPipeline

from . import DEFAULT_GUIDANCE, DEFAULT_STEPS, DEMO_ID, NATIVE, WEIGHTS_DIR  # noqa: F401  (the model's constants, here too)
from . import config as demo_config

TOY_NOTICE = (
    f"Serving the built-in demo model {DEMO_ID!r}. It is a toy: a few-MB model trained in minutes on a CPU\n"
    "from drawn shapes, so it only paints simple coloured shapes on a plain background at 64x64 px\n"
    "(try 'a blue triangle', 'a small red circle on the left', 'a yellow star on a black background').\n"
    "To paint for real, serve a Stable Diffusion model instead:\n"
    "  easel serve --model stabilityai/sd-turbo              (downloaded once from the Hugging Face hub)\n"
    "  easel serve --model /path/to/a/diffusers-folder\n"
    "  easel serve --model /path/to/checkpoint.safetensors"
)


def assemble(components: dict[str, Any]) -> StableDiffusionPipeline:
    """A ``StableDiffusionPipeline`` from built components (no safety checker)."""
    pipe = StableDiffusionPipeline(
        vae=components["vae"], unet=components["unet"], text_encoder=components["text_encoder"],
        tokenizer=components["tokenizer"], scheduler=components["scheduler"],
        safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_pipeline(
    device: str = "cpu", dtype: torch.dtype = torch.float32, weights_dir: str | Path | None = None
) -> StableDiffusionPipeline:
    """Build the demo pipeline from the committed config and weights (or those in ``weights_dir``)."""
    folder = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    cfg = demo_config.read_config(folder)
    components = demo_config.build_components(cfg)
    demo_config.load_weights(components, folder / demo_config.WEIGHTS_NAME)
    for name in demo_config.COMPONENTS:
        components[name].to(device=device, dtype=dtype).eval().requires_grad_(False)
    return assemble(components)


def latent_preview(weights_dir: str | Path | None = None) -> tuple[list[list[float]], list[float]] | None:
    """Linear latent->RGB map for cheap previews: ``rgb[0..1] = latents @ matrix + bias`` per pixel.

    ``latents`` are the pipeline's (scaled) latents, channels last; ``matrix`` is 4x3.
    """
    cfg = demo_config.read_config(Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR)
    prev = cfg.get("preview")
    return (prev["matrix"], prev["bias"]) if prev else None

