"""Seam quality (does the selection's border stand out?) and high-frequency detail.

``seam_ratio(image, selection)`` is the mean gradient magnitude in a band straddling the
selection border divided by the mean gradient magnitude inside the selection (away from
the border). About 1 means the border is invisible in the statistics; a hard paste of a
mismatched patch gives a large ratio. ``detail(image)`` is the mean absolute Laplacian of the
luma: how much fine structure a picture has (a blurred upscale scores low). Used by the tests
and the benchmark.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .compose import as_rgba
from .masks import dilate, erode


def gradient_magnitude(image: Any) -> np.ndarray:
    """Per-pixel |d/dx| + |d/dy| of the luma (forward differences; last row/column repeat)."""
    rgb = as_rgba(image)[..., :3].astype(np.float64)
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    gx = np.abs(np.diff(luma, axis=1, append=luma[:, -1:]))
    gy = np.abs(np.diff(luma, axis=0, append=luma[-1:, :]))
    return gx + gy


def detail(image: Any) -> float:
    """Mean |Laplacian| of the luma (4-neighbour, interior pixels), in levels: high-frequency detail."""
    rgb = as_rgba(image)[..., :3].astype(np.float64)
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    lap = 4 * luma[1:-1, 1:-1] - luma[:-2, 1:-1] - luma[2:, 1:-1] - luma[1:-1, :-2] - luma[1:-1, 2:]
    return float(np.abs(lap).mean()) if lap.size else 0.0


def seam_bands(selection: np.ndarray, width: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (border band, inside) masks: within ``width`` px of the border, and deeper inside."""
    hard = np.where(selection >= 128, np.uint8(255), np.uint8(0))
    outer, inner = dilate(hard, width), erode(hard, width)
    border = (outer > 0) & (inner == 0)
    inside = erode(hard, 2 * width) > 0
    return border, inside


def seam_ratio(image: Any, selection: np.ndarray, width: int = 2) -> float:
    """Mean gradient across the selection border over the mean gradient inside it (see module doc)."""
    border, inside = seam_bands(np.asarray(selection), width)
    if not border.any() or not inside.any():
        raise ValueError("the selection needs a border and an inside at least a few pixels deep")
    grad = gradient_magnitude(image)
    return float(grad[border].mean() / max(grad[inside].mean(), 1e-6))
