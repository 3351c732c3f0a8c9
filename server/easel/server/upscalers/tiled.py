"""An upscaler model run over tiles with overlap, cropped back so there are no seams.

The image is cut into a grid of *cores* (at most ``tile - 2 * overlap`` px a side) that cover it
exactly once; each core runs with ``overlap`` px of its neighbours around it (less at the image's
edges) and only the core's part of the result is kept. A pixel of the result is therefore computed
from at least ``overlap`` px of context on every side, as in one pass over the whole image: for a
model that looks no further than ``overlap`` px the tiled result equals a single pass (up to float
rounding), and for deeper models it differs only by what lies beyond that reach. Memory stays that of
one tile whatever the image's size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..engine.types import CancelledFn, JobCancelled

TILE = 512  # px of input a side per model call (with its overlap)
OVERLAP = 32  # px of context around each core

TileReport = Callable[[int, int], None]  # (tile k, of N): before tile k runs


def spans(length: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(core start, core end, window start, window end) along one side of ``length`` px."""
    core = max(1, tile - 2 * overlap)
    count = max(1, math.ceil(length / core))
    size = math.ceil(length / count)  # equal cores: no thin last one
    out = []
    for i in range(count):
        a, b = i * size, min(length, (i + 1) * size)
        out.append((a, b, max(0, a - overlap), min(length, b + overlap)))
    return out


def tile_count(width: int, height: int, tile: int = TILE, overlap: int = OVERLAP) -> int:
    return len(spans(width, tile, overlap)) * len(spans(height, tile, overlap))


def run_tiled(model: Any, rgb: np.ndarray, scale: int, device: str, dtype: Any, report: TileReport,
              cancelled: CancelledFn, tile: int = TILE, overlap: int = OVERLAP) -> np.ndarray:
    """``model`` (spandrel ImageModelDescriptor: float BCHW 0..1 in, ``scale``× out) over ``rgb`` (HxWx3
    uint8) tile by tile; HxWx3 uint8 ``scale``× the size. JobCancelled between tiles."""
    import torch

    height, width = rgb.shape[:2]
    out = np.zeros((height * scale, width * scale, 3), np.uint8)
    rows, cols = spans(height, tile, overlap), spans(width, tile, overlap)
    total = len(rows) * len(cols)
    source = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]
    k = 0
    for ya, yb, wy0, wy1 in rows:
        for xa, xb, wx0, wx1 in cols:
            if cancelled():
                raise JobCancelled()
            k += 1
            report(k, total)
            window = source[:, :, wy0:wy1, wx0:wx1].to(device=device, dtype=dtype) / 255.0
            with torch.inference_mode():
                result = model(window)
            expected = ((wy1 - wy0) * scale, (wx1 - wx0) * scale)
            if tuple(result.shape[-2:]) != expected:
                raise RuntimeError(f"the upscaler returned {tuple(result.shape[-2:])} for a {wy1 - wy0}x"
                                   f"{wx1 - wx0} tile; expected {expected} (scale {scale})")
            core = result[0, :, (ya - wy0) * scale:(yb - wy0) * scale, (xa - wx0) * scale:(xb - wx0) * scale]
            pixels = (core.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
            out[ya * scale:yb * scale, xa * scale:xb * scale] = pixels
    return out
