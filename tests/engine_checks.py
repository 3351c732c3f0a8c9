"""What the engine tests of every family share: the job runner, pixel comparison and the raw diffusers
pipelines that are the reference results."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from easel.server.engine import Engine, EngineJob


def gradient(size: int) -> Image.Image:
    """An RGB test picture: red and green ramps over a constant blue."""
    y, x = np.mgrid[0:size, 0:size]
    return Image.fromarray(np.stack([x * 4, y * 4, np.full_like(x, 90)], -1).astype(np.uint8), "RGB")


def run(engine: Engine, j: EngineJob, events: list | None = None, cancelled=lambda: False) -> list[Image.Image]:
    return engine.run(j, (events if events is not None else []).append, cancelled)


def arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


def assert_close(a: Image.Image, b: Image.Image) -> None:
    """Equal up to one 8-bit step (batched vs single matmuls may differ in the last float bits)."""
    assert a.size == b.size
    assert np.abs(arr(a) - arr(b)).max() <= 1


def raw_pipelines(paths: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Plain diffusers pipelines straight from the folders, per name and mode: the reference results."""
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, AutoPipelineForText2Image

    out = {}
    for name, path in paths.items():
        t2i = AutoPipelineForText2Image.from_pretrained(path, dtype=torch.float32)
        out[name] = {"txt2img": t2i, "img2img": AutoPipelineForImage2Image.from_pipe(t2i),
                     "inpaint": AutoPipelineForInpainting.from_pipe(t2i)}
        for pipe in out[name].values():
            pipe.set_progress_bar_config(disable=True)
    return out
