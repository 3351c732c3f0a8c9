"""Planning selection work: which region of the sent image to diffuse, and at what size.

``plan_work`` turns (sent image size, selection mask, model native size, overrides) into a
``WorkPlan``: the region (selection bounds + context padding, clamped, rounded to multiples
of 8; the whole image when nothing is selected), the working size the model runs at, and
the resolved mask parameters. The padding rule lives in ``send_region.py`` so plugins send
exactly what the server needs. docs/imaging.md explains the rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ...client import send_region as rules
from ..families import Family
from .geometry import Bounds, Extent

#: A region whose area is within these factors of the native area is diffused 1:1 (no resampling).
KEEP_SCALE = (0.75, 1.5)
#: The working size's longest side is at most this many times the native longest side.
MAX_SIDE_FACTOR = 2.0
MULTIPLE = 8
#: A second pass runs when the region is more than this many times the work size on each side.
SECOND_PASS_FACTOR = 1.5


def native_size(family: str, native: tuple[int, int] | None = None) -> Extent:
    """The target resolution for a model: its declared native size, else its family's (``Family.native``),
    else SD 1.x's."""
    if native is not None:
        return Extent(*native)
    try:
        side = Family(family).native
    except ValueError:
        side = Family.SD1.native
    return Extent(side, side)


def work_size(region: Extent, native: Extent, multiple: int = MULTIPLE, exact: bool = False) -> Extent:
    """The size the model runs at for a region: 1:1 when its area is near native, else scaled to native area.

    Aspect is kept (up to rounding each side to a multiple of ``multiple``); the longest side
    is capped at ``MAX_SIDE_FACTOR`` x native. Regions already a multiple of 8 inside the
    keep band run at exactly their own size. ``exact``: always 1:1, uncapped (the request's
    ``exact_size``), each side rounded to the nearest multiple.
    """
    if region.is_empty:
        raise ValueError(f"cannot plan work for an empty region ({region})")
    if exact:
        return Extent(*(max(multiple, round(side / multiple) * multiple) for side in region))
    area, target = region.area, native.area
    lo, hi = KEEP_SCALE
    scale = 1.0 if lo * target <= area <= hi * target else math.sqrt(target / area)
    w, h = region.width * scale, region.height * scale
    cap = MAX_SIDE_FACTOR * native.longest_side
    if max(w, h) > cap:
        w, h = w * cap / max(w, h), h * cap / max(w, h)
    return Extent(max(multiple, round(w / multiple) * multiple), max(multiple, round(h / multiple) * multiple))


@dataclass(frozen=True)
class WorkPlan:
    """Where and how to diffuse. Coordinates are in the sent image unless named ``document``."""

    mode: str  # "txt2img" | "img2img" | "inpaint"
    image: Extent  # size of the sent image (txt2img: the requested size)
    region: Bounds  # the part of the sent image that is diffused and returned
    work: Extent  # the size the model runs at (multiples of 8)
    selection: Bounds | None  # bounds of the non-zero mask pixels; None = whole image
    grow: int  # resolved mask parameters (pixels of the sent image)
    feather: int
    padding: float
    origin: tuple[int, int] = (0, 0)  # document offset of the sent image (request x, y)

    @property
    def scale(self) -> tuple[float, float]:
        """Working size over region size, per axis (1.0 = 1:1)."""
        return self.work.width / self.region.width, self.work.height / self.region.height

    @property
    def upscale(self) -> float:
        """How many times larger than the work size the region is (the smaller of the two sides' factors)."""
        return min(self.region.width / self.work.width, self.region.height / self.work.height)

    @property
    def wants_second_pass(self) -> bool:
        """Whether the work size is well below the region: more than ``SECOND_PASS_FACTOR`` x on each side."""
        return self.upscale > SECOND_PASS_FACTOR

    @property
    def document_region(self) -> Bounds:
        """The region in document coordinates."""
        return self.region.offset(*self.origin)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (for result parameters and logs)."""
        return {
            "mode": self.mode, "region": list(self.document_region.as_tuple()), "work_size": list(self.work),
            "selection": list(self.selection.offset(*self.origin).as_tuple()) if self.selection else None,
            "grow": self.grow, "feather": self.feather, "padding": self.padding,
        }


def plan_work(image_size: Extent | tuple[int, int], mask: Any | None, native: Extent | tuple[int, int], *,
              grow: int | None = None, feather: int | None = None, padding: float | None = None,
              has_image: bool = True, origin: tuple[int, int] = (0, 0),
              canvas: Extent | tuple[int, int] | None = None, exact: bool = False) -> WorkPlan:
    """Plan one generation on a sent image of ``image_size`` placed at ``origin`` in the document.

    ``mask``: HxW uint8 selection (255 = regenerate, soft values blend) or None. No mask or an
    all-zero mask means the whole image (img2img; txt2img when ``has_image`` is False).
    ``canvas``: the document size; the region is clamped to the part of the sent image that
    lies on the canvas. ``grow``/``feather``/``padding``: None = defaults (send_region.py).
    ``exact``: the model runs at the region's own size (``work_size``).
    """
    size, native = Extent(*image_size), Extent(*native)
    if size.is_empty:
        raise ValueError(f"image size must be positive (got {size})")
    limit = Bounds.of(size)
    if canvas is not None:
        limit = limit.intersect(Bounds.of(canvas, -origin[0], -origin[1]))
        if limit.is_empty:
            raise ValueError(f"the sent image at {origin} does not overlap the {Extent(*canvas)} canvas")
    selection = None
    if mask is not None:
        if not has_image:
            raise ValueError("a mask needs an image to regenerate")
        if tuple(mask.shape) != (size.height, size.width):
            raise ValueError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {size}")
        selection = Bounds.from_mask(mask)
        if selection is not None:
            selection = selection.intersect(limit)
            selection = None if selection.is_empty else selection
    if selection is None:
        mode = "img2img" if has_image else "txt2img"
        sel_size = limit.extent
        g, f, p = rules.resolve(sel_size.width, sel_size.height, grow, feather, padding)
        return WorkPlan(mode, size, limit, work_size(limit.extent, native, exact=exact), None, g, f, p, tuple(origin))
    g, f, p = rules.resolve(selection.width, selection.height, grow, feather, padding)
    region = Bounds.from_box(rules.context_bounds(selection.as_tuple(), limit.as_tuple(), g, f, p))
    return WorkPlan("inpaint", size, region, work_size(region.extent, native, exact=exact), selection, g, f, p,
                    tuple(origin))


def plan_txt2img(size: Extent | tuple[int, int], native: Extent | tuple[int, int],
                 origin: tuple[int, int] = (0, 0), exact: bool = False) -> WorkPlan:
    """Text to image at ``size``: the model runs near its native area, the result is resized to ``size``.

    E.g. the demo model (64² native) asked for 512x384 runs at 72x56 (then a second pass refines
    it at 512x384, ``wants_second_pass``); ``exact`` runs it at 512x384.
    """
    return plan_work(size, None, native, has_image=False, origin=origin, exact=exact)


def plan_generation(request: Any, image: Any | None, mask: Any | None, native: Extent | tuple[int, int]) -> WorkPlan:
    """``plan_work`` for a ``protocol.GenerateRequest`` and its decoded HxWx4 image / HxW mask."""
    origin = (request.x, request.y)
    exact = bool(getattr(request, "exact_size", False))
    canvas = None
    if request.canvas_width is not None or request.canvas_height is not None:
        canvas = (request.canvas_width or 2**31, request.canvas_height or 2**31)
    if image is None:
        native = Extent(*native)
        size = (request.width or native.width, request.height or native.height)
        return plan_txt2img(size, native, origin, exact)
    height, width = image.shape[:2]
    return plan_work((width, height), mask, native, grow=request.grow, feather=request.feather,
                     padding=request.padding, origin=origin, canvas=canvas, exact=exact)
