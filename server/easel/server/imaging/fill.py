"""Filling transparent pixels before diffusion (outpainting), with numpy and Pillow only.

Method: *pull-push* (a.k.a. push-pull) interpolation on alpha-weighted colour.

* Pull: halve the image repeatedly. Each coarser pixel sums its 2x2 children's
  alpha-premultiplied colour and alpha; its weight is that alpha sum capped at 1 and its colour
  the alpha-weighted mean, so a coarse pixel is "known" as soon as any child is.
* Push: from the coarsest level back down, every pixel keeps its own colour in proportion to
  its weight and takes the rest from the (bilinearly upsampled) coarser level:
  ``colour = own * w + coarser * (1 - w)``.

Opaque pixels come back bit-exact; semi-transparent ones are their colour blended with the
fill by their alpha; fully transparent ones get a smooth blend of the nearest opaque colours
(farther away = blurrier). A region with no opaque pixel at all becomes neutral grey (127).
Cost is linear in the pixel count.
"""

from __future__ import annotations

import numpy as np
from PIL import Image as PILImage

EMPTY_FILL = 127


def _down(color: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One pull step: 2x2 sums (odd sizes padded with weight 0), weight capped at 1."""
    h, w = weight.shape
    ph, pw = h + h % 2, w + w % 2
    c = np.zeros((ph, pw, 3), np.float32)
    wt = np.zeros((ph, pw), np.float32)
    c[:h, :w], wt[:h, :w] = color, weight
    csum = c.reshape(ph // 2, 2, pw // 2, 2, 3).sum(axis=(1, 3))
    wsum = wt.reshape(ph // 2, 2, pw // 2, 2).sum(axis=(1, 3))
    capped = np.minimum(wsum, 1.0)
    scale = np.divide(capped, wsum, out=np.zeros_like(wsum), where=wsum > 0)
    return csum * scale[..., None], capped


def _up(color: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of a float HxWx3 colour image to (height, width) = ``size``."""
    h, w = size
    if color.shape[:2] == (h, w):
        return color
    channels = [np.asarray(PILImage.fromarray(np.ascontiguousarray(color[..., i], np.float32), "F")
                           .resize((w, h), PILImage.Resampling.BILINEAR)) for i in range(3)]
    return np.stack(channels, axis=-1)


def fill_transparent(rgba: np.ndarray) -> np.ndarray:
    """An HxWx3 uint8 image: ``rgba`` with its (semi-)transparent pixels filled from nearby opaque colour."""
    rgba = np.asarray(rgba)
    if rgba.ndim != 3 or rgba.shape[2] != 4 or rgba.dtype != np.uint8:
        raise ValueError(f"expected an HxWx4 uint8 image (got {rgba.shape} {rgba.dtype})")
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        return rgba[..., :3].copy()
    if alpha.max() == 0:
        return np.full(rgba.shape[:2] + (3,), EMPTY_FILL, np.uint8)
    weight = alpha.astype(np.float32) / 255.0
    levels = [(rgba[..., :3].astype(np.float32) * weight[..., None], weight)]
    while levels[-1][1].shape[0] > 1 or levels[-1][1].shape[1] > 1:
        levels.append(_down(*levels[-1]))
    color, weight = levels[-1]
    result = np.divide(color, weight[..., None], out=np.full_like(color, EMPTY_FILL), where=weight[..., None] > 0)
    for color, weight in reversed(levels[:-1]):
        result = color + (1.0 - weight[..., None]) * _up(result, weight.shape)
    return np.clip(np.rint(result), 0, 255).astype(np.uint8)
