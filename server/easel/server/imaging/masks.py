"""Mask morphology on uint8 arrays with numpy only: grow (dilate), shrink (erode), feather (blur).

Distances are square (Chebyshev): ``dilate(m, r)`` takes the maximum over a (2r+1)² window.
``blur(m, r)`` is three stacked box filters whose radii add up to ``r`` (close to a gaussian
with sigma ≈ r/2.5) computed in integer arithmetic, so its support is exactly ``r``
pixels: a pixel farther than ``r`` from any non-zero pixel stays 0, and one whose whole
``r``-window is 255 stays 255. Image edges repeat the edge pixel (a selection touching the
canvas edge is treated as continuing beyond it).

The two masks of a selection edit (docs/imaging.md):

* ``denoise_mask(sel, grow, feather)``: what the model repaints. The selection's support
  (every pixel > 0, soft or not), grown by ``grow``, then faded to 0 over ``feather`` more
  pixels: 255 within ``grow`` of the selection, 0 beyond ``grow + feather``.
* ``composite_mask(sel, feather)``: how the result is laid over the original.
  ``max(sel, fade)`` where ``fade`` falls smoothly from the selection's own value at its
  border to 0 at ``feather`` pixels outside it. Inside the selection it equals the
  selection (255 stays exactly 255, a soft value blends proportionally); beyond
  ``feather`` it is exactly 0, so those pixels are never touched. ``feather=0`` gives the
  selection itself.
"""

from __future__ import annotations

import numpy as np


def _check(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be a 2-D array (got shape {mask.shape})")
    if mask.dtype != np.uint8:
        raise ValueError(f"a mask must be uint8 0..255 (got {mask.dtype})")
    return mask


def _max_filter_last(a: np.ndarray, radius: int) -> np.ndarray:
    """Running maximum over a ``2*radius+1`` window along the last axis (van Herk/Gil-Werman, O(n))."""
    k = 2 * radius + 1
    n = a.shape[-1]
    total = -(-(n + 2 * radius) // k) * k
    padded = np.pad(a, [(0, 0)] * (a.ndim - 1) + [(radius, total - n - radius)])
    blocks = padded.reshape(*a.shape[:-1], total // k, k)
    prefix = np.maximum.accumulate(blocks, axis=-1).reshape(*a.shape[:-1], total)
    suffix = np.maximum.accumulate(blocks[..., ::-1], axis=-1)[..., ::-1].reshape(*a.shape[:-1], total)
    return np.maximum(suffix[..., :n], prefix[..., k - 1 : k - 1 + n])


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Grey dilation with a square of side ``2*radius+1``: every value spreads ``radius`` pixels."""
    mask = _check(mask)
    if radius <= 0:
        return mask.copy()
    out = _max_filter_last(mask, radius)
    return np.ascontiguousarray(_max_filter_last(out.T, radius).T)


def erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Grey erosion with a square of side ``2*radius+1`` (outside the array counts as 255)."""
    mask = _check(mask)
    return 255 - dilate(255 - mask, radius)


def _box_mean(a: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Rounded mean over a ``2*radius+1`` window along ``axis``, edges repeated (exact int32 arithmetic)."""
    pad = [(0, 0)] * a.ndim
    pad[axis] = (radius + 1, radius)
    padded = np.pad(a, pad, mode="edge")
    first = [slice(None)] * a.ndim
    first[axis] = 0
    padded[tuple(first)] = 0  # the cumulative sum's leading zero
    csum = np.cumsum(padded, axis=axis, dtype=np.int32)
    hi, lo = list(first), list(first)
    hi[axis], lo[axis] = slice(2 * radius + 1, None), slice(0, a.shape[axis])
    k = 2 * radius + 1
    return (csum[tuple(hi)] - csum[tuple(lo)] + k // 2) // k


def _radii(radius: int) -> list[int]:
    return [r for r in (radius // 3 + (1 if i < radius % 3 else 0) for i in range(3)) if r > 0]


def blur(mask: np.ndarray, radius: int) -> np.ndarray:
    """Soft edges: three box filters (radii summing to ``radius``), so the support is exactly ``radius``.

    Each 1-D pass (rows, then columns) is an exact integer sum rounded to the nearest integer,
    so a window of 255s stays 255 and a window of 0s stays 0 bit-exactly.
    """
    mask = _check(mask)
    if radius <= 0:
        return mask.copy()
    if max(mask.shape) + 2 * radius + 2 > 2**31 // 256:
        raise ValueError(f"mask {mask.shape} too large to blur exactly")
    acc = mask.astype(np.int32)
    for r in _radii(radius):
        acc = _box_mean(_box_mean(acc, r, 1), r, 0)
    return acc.astype(np.uint8)


def denoise_mask(selection: np.ndarray, grow: int, feather: int) -> np.ndarray:
    """What the model repaints: the selection's support grown by ``grow`` and faded over ``feather`` px.

    255 within ``grow`` pixels of any selected pixel, 0 beyond ``grow + feather``.
    """
    sel = _check(selection)
    support = np.where(sel > 0, np.uint8(255), np.uint8(0))
    fade = feather // 2
    return blur(dilate(support, grow + feather - fade), fade)


def composite_mask(selection: np.ndarray, feather: int) -> np.ndarray:
    """How the result is laid over the original: the selection, plus a fade ``feather`` px wide outside it.

    Equal to the selection inside it (fully opaque where it is 255, proportional where it is
    soft), smoothly falling to exactly 0 at ``feather`` pixels outside.
    """
    sel = _check(selection)
    if feather <= 0:
        return sel.copy()
    fade = (feather + 1) // 2
    return np.maximum(sel, blur(dilate(sel, feather - fade), fade))
