"""Engine jobs for the engine tests of every family: one size, one prompt, a gradient picture, a square selection."""

from __future__ import annotations

import numpy as np
from PIL import Image

from easel.server.engine import EngineJob
from helpers.engine_checks import gradient
from helpers.pictures import engine_job

SIZE = 64
PROMPT = "a red cat"


def _image() -> Image.Image:
    return gradient(SIZE)


def _mask(soft: bool = False) -> Image.Image:
    """A square selection in the middle; ``soft``: with a half-selected band around it."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    if soft:
        mask[12:52, 12:52] = 128
    mask[16:48, 16:48] = 255
    return Image.fromarray(mask, "L")


def job(mode: str = "txt2img", soft: bool = False, **kw) -> EngineJob:
    """A job of ``mode`` (negative prompt "blurry", none for FLUX.1, which has none)."""
    kw.setdefault("negative_prompt", "" if "flux" in str(kw.get("model")) else "blurry")
    return engine_job(mode, SIZE, PROMPT, _image() if mode != "txt2img" else None,
                      _mask(soft) if mode == "inpaint" else None, **kw)
