"""Simple, documented measures that grade the demo model's pictures (numpy only).

- **Background**: the median colour of the 2-pixel border.
- **Foreground mask**: pixels whose RGB distance from the background exceeds 60 (of 441); only
  the largest 4-connected component is kept (the shape).
- **Colour**: the dominant hue of the foreground's chromatic pixels (HSV saturation >= 0.3 and
  value >= 0.25): the peak of a 10-degree hue histogram, refined by the circular mean within
  +-20 degrees of it, then the nearest palette hue (``shapes.COLOURS``).
- **Shape**: the fill ratio, mask area / bounding-box area: a circle fills pi/4 = 0.785, a
  square 1.0, an upright triangle 0.5. Below 0.64 is "triangle", 0.64-0.89 "circle", above
  "square". A mask under 20 pixels is no shape.
- **Roundness**: IoU of the mask with the disc of equal area centred on the mask's centroid
  (1.0 for a perfect disc, about 0.83 for a square, lower for lumpy or elongated blobs).
"""

from __future__ import annotations

import colorsys
from collections import deque

import numpy as np
from PIL import Image

from .shapes import COLOURS

FG_THRESHOLD = 60.0
MIN_AREA = 20
_PALETTE_HUES = {name: colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0] * 360 for name, rgb in COLOURS.items()}


def _rgb(img: Image.Image | np.ndarray) -> np.ndarray:
    return np.asarray(img.convert("RGB") if isinstance(img, Image.Image) else img, dtype=np.float32)


def background(img: Image.Image | np.ndarray) -> np.ndarray:
    """Median RGB of the picture's 2-pixel border."""
    a = _rgb(img)
    border = np.concatenate([a[:2].reshape(-1, 3), a[-2:].reshape(-1, 3), a[:, :2].reshape(-1, 3), a[:, -2:].reshape(-1, 3)])
    return np.median(border, axis=0)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a boolean mask."""
    h, w = mask.shape
    labels = np.zeros(mask.shape, dtype=np.int32)
    best, best_size, n = 0, 0, 0
    for y0, x0 in zip(*np.nonzero(mask)):
        if labels[y0, x0]:
            continue
        n += 1
        labels[y0, x0] = n
        size, queue = 0, deque([(y0, x0)])
        while queue:
            y, x = queue.popleft()
            size += 1
            for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not labels[yy, xx]:
                    labels[yy, xx] = n
                    queue.append((yy, xx))
        if size > best_size:
            best, best_size = n, size
    return labels == best if best else np.zeros_like(mask, dtype=bool)


def foreground(img: Image.Image | np.ndarray, threshold: float = FG_THRESHOLD) -> np.ndarray:
    """Boolean mask of the shape: the largest blob of pixels that differ from the background."""
    a = _rgb(img)
    dist = np.linalg.norm(a - background(a), axis=-1)
    return largest_component(dist > threshold)


def hue_of(img: Image.Image | np.ndarray, mask: np.ndarray) -> float | None:
    """Dominant hue in degrees of the masked chromatic pixels, or None if there are too few."""
    px = _rgb(img)[mask] / 255.0
    if len(px) == 0:
        return None
    mx, mn = px.max(axis=1), px.min(axis=1)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0)
    keep = (sat >= 0.3) & (mx >= 0.25)
    if keep.sum() < max(5, 0.2 * len(px)):
        return None
    hues = np.array([colorsys.rgb_to_hsv(*p)[0] * 360 for p in px[keep]])
    hist = np.bincount((hues // 10).astype(int) % 36, minlength=36)
    peak = (np.argmax(hist) + 0.5) * 10
    near = hues[np.abs((hues - peak + 180) % 360 - 180) <= 20]
    ang = np.deg2rad(near)
    return float(np.rad2deg(np.arctan2(np.sin(ang).mean(), np.cos(ang).mean())) % 360)


def colour_of(img: Image.Image | np.ndarray, mask: np.ndarray | None = None) -> str | None:
    """The palette colour nearest the foreground's dominant hue (None: no chromatic shape)."""
    mask = foreground(img) if mask is None else mask
    hue = hue_of(img, mask)
    if hue is None:
        return None
    return min(_PALETTE_HUES, key=lambda n: abs((hue - _PALETTE_HUES[n] + 180) % 360 - 180))


def fill_ratio(mask: np.ndarray) -> float:
    """Mask area divided by its bounding-box area (0 for an empty mask)."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return 0.0
    return float(len(ys) / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)))


def shape_of(img: Image.Image | np.ndarray, mask: np.ndarray | None = None) -> str | None:
    """"triangle", "circle" or "square" from the fill ratio; None if there is no shape."""
    mask = foreground(img) if mask is None else mask
    if mask.sum() < MIN_AREA:
        return None
    f = fill_ratio(mask)
    return "triangle" if f < 0.64 else "circle" if f < 0.89 else "square"


def roundness(mask: np.ndarray) -> float:
    """IoU of the mask with the equal-area disc at its centroid (1.0 = a perfect disc)."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return 0.0
    r = np.sqrt(len(ys) / np.pi)
    yy, xx = np.mgrid[: mask.shape[0], : mask.shape[1]]
    disc = (yy + 0.5 - (ys.mean() + 0.5)) ** 2 + (xx + 0.5 - (xs.mean() + 0.5)) ** 2 <= r * r
    return float((disc & mask).sum() / (disc | mask).sum())
