"""Test pictures and engine jobs shared by the imaging, engine and feature tests."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image as PILImage

from easel.client.protocol import Image
from easel.server.engine import EngineJob


def pixels(image: Image) -> np.ndarray:
    """A wire image (raw RGBA, or PNG/WebP) as an HxWx4 uint8 array."""
    if image.format == "rgba":
        return np.frombuffer(image.data, np.uint8).reshape(image.height, image.width, 4)
    return np.asarray(PILImage.open(io.BytesIO(image.data)).convert("RGBA"))


def rgba_image(arr: np.ndarray) -> Image:
    """An HxWx4 uint8 array as a raw RGBA wire image."""
    return Image.rgba(arr.shape[1], arr.shape[0], arr.tobytes())


def texture(w: int, h: int, seed: int = 0, amp: float = 60.0) -> np.ndarray:
    """A smooth, painterly opaque RGBA image (HxWx4 uint8) with mild grain."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    base = [120 + amp * np.sin(xx / (17 + 5 * c) + c) * np.cos(yy / (23 + 3 * c)) for c in range(3)]
    rgb = np.stack(base, -1) + rng.normal(0, 3, (h, w, 3))
    return np.dstack([np.clip(rgb, 0, 255).astype(np.uint8), np.full((h, w), 255, np.uint8)])


def box_mask(w: int, h: int, box: tuple[int, int, int, int], value: int = 255) -> np.ndarray:
    """An HxW uint8 mask with ``value`` inside ``box`` = (x, y, width, height), 0 elsewhere."""
    mask = np.zeros((h, w), np.uint8)
    x, y, bw, bh = box
    mask[y: y + bh, x: x + bw] = value
    return mask


def engine_job(mode: str, size: int, prompt: str, picture: Any = None, selection: Any = None, **kw: Any) -> EngineJob:
    """An ``EngineJob`` of ``mode`` at ``size``², 3 steps, seed 7 unless ``kw`` says otherwise;
    img2img and inpaint get ``picture`` as their image (and strength 0.7), inpaint ``selection`` as its mask."""
    kw.setdefault("steps", 3)
    kw.setdefault("seeds", [7])
    if mode != "txt2img":
        kw.setdefault("image", picture)
        kw.setdefault("strength", 0.7)
    if mode == "inpaint":
        kw.setdefault("mask", selection)
    return EngineJob(mode=mode, prompt=prompt, width=size, height=size, **kw)
