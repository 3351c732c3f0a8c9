"""Into and out of the model: crop/fill/resize the work inputs, and build the result layer.

``prepare`` gives the engine its RGB image and L denoise mask at working size;
``composite`` turns each generated image into an RGBA layer plus its document offset, such
that laying it over the original with normal alpha blending changes nothing outside the
compositing mask (bit-exact) and replaces the inside of the selection completely.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image as PILImage

from .fill import fill_transparent
from .geometry import Bounds, Extent
from .masks import composite_mask, denoise_mask
from .region import WorkPlan

LANCZOS = PILImage.Resampling.LANCZOS
BILINEAR = PILImage.Resampling.BILINEAR


@dataclass(frozen=True)
class LayerResult:
    """A result layer: HxWx4 uint8 non-premultiplied RGBA, placed at ``x, y`` in the document."""

    rgba: np.ndarray
    x: int
    y: int

    @property
    def width(self) -> int:
        return int(self.rgba.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgba.shape[0])

    @property
    def bounds(self) -> Bounds:
        """Where the layer lies in the document."""
        return Bounds(self.x, self.y, self.width, self.height)


def as_rgba(image: Any) -> np.ndarray:
    """An HxWx4 uint8 array from a PIL image or an HxW / HxWx3 / HxWx4 uint8 array."""
    if isinstance(image, PILImage.Image):
        return np.asarray(image.convert("RGBA"))
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (got {arr.dtype})")
    if arr.ndim == 2:
        arr = np.dstack([arr, arr, arr])
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxWx3 or HxWx4 image (got shape {arr.shape})")
    if arr.shape[2] == 3:
        arr = np.dstack([arr, np.full(arr.shape[:2], 255, np.uint8)])
    return arr


def as_mask(mask: Any) -> np.ndarray:
    """An HxW uint8 array from a PIL image (luminance) or an HxW uint8 array."""
    if isinstance(mask, PILImage.Image):
        return np.asarray(mask.convert("L"))
    arr = np.asarray(mask)
    if arr.ndim != 2 or arr.dtype != np.uint8:
        raise ValueError(f"a mask must be an HxW uint8 array (got {arr.shape} {arr.dtype})")
    return arr


def resize(array: np.ndarray, size: Extent, resample: PILImage.Resampling = LANCZOS) -> np.ndarray:
    """``array`` (HxW or HxWx3 uint8) resized to exactly ``size``; returned as is when already that size."""
    if (array.shape[1], array.shape[0]) == (size.width, size.height):
        return array
    return np.asarray(PILImage.fromarray(np.ascontiguousarray(array)).resize(size.as_tuple(), resample))


def region_selection(plan: WorkPlan, mask: Any) -> np.ndarray:
    """The selection mask (HxW uint8) cropped to the plan's region."""
    m = as_mask(mask)
    if m.shape != (plan.image.height, plan.image.width):
        raise ValueError(f"mask is {m.shape[1]}x{m.shape[0]} but the plan is for {plan.image}")
    return m[plan.region.slices]


def region_source(plan: WorkPlan, image: Any) -> np.ndarray:
    """The sent image (HxWx4 uint8) cropped to the plan's region."""
    rgba = as_rgba(image)
    if rgba.shape[:2] != (plan.image.height, plan.image.width):
        raise ValueError(f"image is {rgba.shape[1]}x{rgba.shape[0]} but the plan is for {plan.image}")
    return rgba[plan.region.slices]


def prepare(plan: WorkPlan, image: Any | None, mask: Any | None = None
            ) -> tuple[PILImage.Image | None, PILImage.Image | None]:
    """The engine's inputs at ``plan.work`` size: (RGB image, L denoise mask); None where not used.

    The region is cropped, transparent pixels are filled (``fill.py``), and it is resized
    with Lanczos (the mask bilinearly); a region already at working size is not resampled.
    """
    if plan.mode == "txt2img" or image is None:
        return None, None
    rgb = fill_transparent(region_source(plan, image))
    work_image = PILImage.fromarray(resize(rgb, plan.work), "RGB")
    if plan.mode != "inpaint" or mask is None:
        return work_image, None
    dmask = denoise_mask(region_selection(plan, mask), plan.grow, plan.feather)
    return work_image, PILImage.fromarray(resize(dmask, plan.work, BILINEAR), "L")


def composite(plan: WorkPlan, image: Any | None, mask: Any | None, generated: Any) -> LayerResult:
    """The result layer for one generated image (any size; it is resized to the region exactly).

    * txt2img: the generated image at the requested size, opaque, at the request offset.
    * img2img: the whole region opaque (the whole canvas at 0, 0 for a full-canvas request).
    * inpaint: cropped to where the compositing mask is non-zero; alpha = compositing mask,
      colour = generated where alpha > 0 and the original where alpha = 0.
    """
    gen = np.asarray(generated.convert("RGB")) if isinstance(generated, PILImage.Image) else np.asarray(generated)
    if gen.ndim != 3 or gen.shape[2] != 3 or gen.dtype != np.uint8:
        raise ValueError(f"generated image must be RGB uint8 (got {gen.shape} {gen.dtype})")
    gen = resize(gen, plan.region.extent)
    ox, oy = plan.origin
    if plan.mode != "inpaint" or image is None or mask is None:
        opaque = np.full(gen.shape[:2], 255, np.uint8)
        return LayerResult(np.dstack([gen, opaque]), ox + plan.region.x, oy + plan.region.y)
    cmask = composite_mask(region_selection(plan, mask), plan.feather)
    paste = Bounds.from_mask(cmask)
    if paste is None:  # cannot happen for a plan made from this mask; keep the type honest
        paste = Bounds(0, 0, 1, 1)
    alpha = cmask[paste.slices]
    original = region_source(plan, image)[paste.slices]
    rgb = np.where(alpha[..., None] > 0, gen[paste.slices], original[..., :3])
    doc = paste.offset(plan.region.x + ox, plan.region.y + oy)
    return LayerResult(np.dstack([rgb, alpha]).astype(np.uint8), doc.x, doc.y)


def flatten(base: Any, layer: LayerResult, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """``layer`` laid over ``base`` (an image at document offset ``origin``) with normal alpha blending.

    Straight-alpha "over", rounded to uint8: alpha 0 leaves ``base`` bit-exact, alpha 255
    gives the layer bit-exact. Parts of the layer outside ``base`` are dropped.
    """
    out = as_rgba(base).copy()
    h, w = out.shape[:2]
    where = layer.bounds.offset(-origin[0], -origin[1])
    dst = where.clamp((w, h))
    if dst.is_empty:
        return out
    src = dst.relative_to(where)
    top = layer.rgba[src.slices].astype(np.float64)
    bottom = out[dst.slices].astype(np.float64)
    a, b = top[..., 3:] / 255.0, bottom[..., 3:] / 255.0
    out_a = a + b * (1.0 - a)
    num = top[..., :3] * a + bottom[..., :3] * b * (1.0 - a)
    rgb = np.divide(num, out_a, out=bottom[..., :3].copy(), where=out_a > 0)
    blended = np.concatenate([rgb, out_a * 255.0], axis=-1)
    blended = np.where(a == 0, bottom, np.where(a == 1, top, blended))
    out[dst.slices] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out
