"""Engine jobs for the SD 3/3.5 and FLUX.1 tests: one size, one prompt, a gradient picture, a square selection."""

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


def _mask() -> Image.Image:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[16:48, 16:48] = 255
    return Image.fromarray(mask, "L")


def job(mode: str = "txt2img", **kw) -> EngineJob:
    kw.setdefault("negative_prompt", "" if "flux" in str(kw.get("model")) else "blurry")  # Flux has none
    return engine_job(mode, SIZE, PROMPT, _image() if mode != "txt2img" else None,
                      _mask() if mode == "inpaint" else None, **kw)
