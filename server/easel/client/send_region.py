"""Which canvas region a plugin sends, and the selection defaults behind it (stdlib only).

Both plugins bundle ``easel.client`` whole as their ``shared`` package (``easel/plugin_install.py``),
and the server's region planner (``region.py``) uses the
very same functions, so the region a plugin sends is the region the server wants.

Boxes are plain ``(x, y, width, height)`` tuples of ints; ``width``/``height`` may be 0.

The rule (docs/imaging.md has the picture):

1. ``avg`` = average side of the selection bounds, ``(w + h) / 2``.
2. Defaults: ``grow = max(4, round(0.03 * avg))``, ``feather = max(2, round(0.05 * avg))``,
   ``padding = 0.25`` (a fraction of ``avg``).
3. Context padding in pixels: ``max(32, ceil(padding * avg), grow + feather + 8)`` on each
   side, so the grow/feather bands always fit inside the region with room to spare.
4. Pad the selection, clamp it to the limit (the canvas), widen it to at least 64 px per
   side, then to a multiple of 8 per side, each time centred and shifted back inside the
   limit; a side that the limit makes shorter stays as long as the limit allows.
"""

from __future__ import annotations

import math

Box = tuple[int, int, int, int]  # x, y, width, height

DEFAULT_PADDING = 0.25  # context on each side, as a fraction of the selection's average side
MIN_PADDING = 32  # pixels of context at least (A1111's "only masked padding" default)
MIN_REGION = 64  # the smallest region side worth diffusing (tiny selections get this much)
GROW_FRACTION, MIN_GROW = 0.04, 4
FEATHER_FRACTION, MIN_FEATHER = 0.08, 3
BAND_MARGIN = 8  # context beyond the grow + feather bands
MULTIPLE = 8  # region sides are rounded up to multiples of this where the canvas allows


def average_side(width: int, height: int) -> float:
    """The selection size the defaults scale with."""
    return (width + height) / 2


def default_grow(width: int, height: int) -> int:
    """How far beyond the selection the model repaints at full strength (pixels)."""
    return max(MIN_GROW, round(GROW_FRACTION * average_side(width, height)))


def default_feather(width: int, height: int) -> int:
    """Width of the soft blend band outside the selection (pixels)."""
    return max(MIN_FEATHER, round(FEATHER_FRACTION * average_side(width, height)))


def resolve(width: int, height: int, grow: int | None = None, feather: int | None = None,
            padding: float | None = None) -> tuple[int, int, float]:
    """``(grow, feather, padding)`` with ``None`` replaced by the defaults for this selection size."""
    g = default_grow(width, height) if grow is None else int(grow)
    f = default_feather(width, height) if feather is None else int(feather)
    p = DEFAULT_PADDING if padding is None else float(padding)
    if g < 0 or f < 0 or p < 0:
        raise ValueError(f"grow, feather and padding must not be negative (got {g}, {f}, {p})")
    return g, f, p


def context_padding(width: int, height: int, grow: int | None = None, feather: int | None = None,
                    padding: float | None = None) -> int:
    """Pixels of context added on each side of a ``width`` x ``height`` selection."""
    g, f, p = resolve(width, height, grow, feather, padding)
    return max(MIN_PADDING, math.ceil(p * average_side(width, height)), g + f + BAND_MARGIN)


def expand_interval(start: int, size: int, want: int, lo: int, hi: int) -> tuple[int, int]:
    """Widen ``[start, start+size)`` to ``want`` (at most ``hi - lo``), centred, shifted into ``[lo, hi)``.

    The result always contains the input interval when the input lies inside ``[lo, hi)``.
    """
    want = min(want, hi - lo)
    if size >= want:
        return start, size
    begin = start - (want - size) // 2
    begin = min(max(begin, lo), hi - want)
    return begin, want


def intersect(a: Box, b: Box) -> Box:
    """The overlap of two boxes; width/height 0 when they do not overlap."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    return x0, y0, max(0, x1 - x0), max(0, y1 - y0)


def context_bounds(selection: Box, limit: Box, grow: int | None = None, feather: int | None = None,
                   padding: float | None = None, multiple: int = MULTIPLE) -> Box:
    """The work region for ``selection``: padded, clamped to ``limit``, widened, rounded (see module doc).

    An empty selection, or one entirely outside ``limit``, gives ``limit`` itself.
    """
    sel = intersect(selection, limit)
    if sel[2] <= 0 or sel[3] <= 0:
        return tuple(limit)  # type: ignore[return-value]
    pad = context_padding(selection[2], selection[3], grow, feather, padding)
    box = intersect((sel[0] - pad, sel[1] - pad, sel[2] + 2 * pad, sel[3] + 2 * pad), limit)
    out = []
    for axis in (0, 1):
        lo, hi = limit[axis], limit[axis] + limit[axis + 2]
        start, size = expand_interval(box[axis], box[axis + 2], MIN_REGION, lo, hi)
        start, size = expand_interval(start, size, -(-size // multiple) * multiple, lo, hi)
        out.append((start, size))
    return out[0][0], out[1][0], out[0][1], out[1][1]


def send_region(selection: Box | None, canvas: tuple[int, int], grow: int | None = None,
                feather: int | None = None, padding: float | None = None) -> Box:
    """The canvas region a plugin should send for ``selection`` on a ``canvas`` = (width, height) document.

    No (or an empty) selection: the whole canvas. Otherwise the selection's context region,
    so a 512 px selection costs the same on an 8192 px canvas as on a 1024 px one. Pass the
    request's ``grow``/``feather``/``padding`` overrides when the user set any. Send the
    region's pixels as ``image`` (and the selection cropped to it as ``mask``) with
    ``x, y`` = the region's offset and ``canvas_width``/``canvas_height`` = the canvas.
    """
    limit = (0, 0, int(canvas[0]), int(canvas[1]))
    if selection is None:
        return limit
    return context_bounds(selection, limit, grow, feather, padding)
