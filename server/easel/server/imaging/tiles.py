"""Tiled refinement as pure functions: plan overlapping tiles over a big image, blend them back.

``plan_tiles(size, tile)`` covers an image of ``size`` with tiles the model can run at
(``tile``: the model's native size, multiples of 8) that overlap by at least ``overlap`` px.
Along each axis the tiles are spread evenly: the first starts at 0, the last ends at the
image's edge, so overlaps are equal up to a pixel and at least ``overlap``. An axis shorter
than a tile gets one tile of that length rounded up to a multiple of 8 (the image is padded
by repeating its edge, < 8 px, and the padding is cropped away again).

``TileBlender`` lays the refined tiles back together (``blend`` does it for a list). Weights
are separable, ``wx(x) * wy(y)``; along an axis each tile's weight ramps linearly across the
overlap with its neighbour (a feathered crossfade over the whole overlap) and is flat
elsewhere. Weights are integers that sum to exactly ``WEIGHT`` per axis (``WEIGHT**2`` per
pixel), so a pixel covered by one tile is that tile's pixel bit-exactly and tiles that agree
(e.g. constant colour) blend to exactly that value. Blending streams row by row of tiles: it
holds one band of rows in memory, never a full-size accumulator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from .geometry import Bounds, Extent

MULTIPLE = 8
WEIGHT = 256  # per-axis weight total; a pixel's weights sum to WEIGHT**2 (255 * WEIGHT**2 fits int32)


def default_overlap(tile: Extent) -> int:
    """The overlap used when none is given: 1/8 of the tile's shorter side in multiples of 8, at least 16 px.

    512 px tiles overlap by 64 px (A1111's SD-upscale default), 1024 px by 128, 64 px by 16.
    """
    return max(16, round(tile.shortest_side / 8 / MULTIPLE) * MULTIPLE)


def axis_tiles(length: int, tile: int, overlap: int) -> tuple[int, tuple[int, ...]]:
    """(tile length, start positions) covering ``0..length`` on one axis with overlaps >= ``overlap``."""
    if length < 1 or tile < MULTIPLE:
        raise ValueError(f"need a positive length and a tile of at least {MULTIPLE} px (got {length}, {tile})")
    if length <= tile:
        return math.ceil(length / MULTIPLE) * MULTIPLE, (0,)
    overlap = min(max(overlap, 0), tile // 2)
    count = math.ceil((length - overlap) / (tile - overlap))
    last = length - tile
    return tile, tuple(round(i * last / (count - 1)) for i in range(count))


def axis_weights(length: int, tile: int, starts: tuple[int, ...]) -> np.ndarray:
    """int32 weights (tiles x tile) that sum to exactly ``WEIGHT`` at every position of ``0..length``.

    Each tile ramps over its overlap with its left and right neighbour; where only one tile
    covers a pixel its weight is ``WEIGHT``. Where two overlap, the pair is a linear crossfade.
    """
    span = max(length, tile)
    pos = np.arange(tile, dtype=np.float64) + 0.5
    ramps = np.ones((len(starts), tile))
    for i, start in enumerate(starts):
        before = starts[i - 1] + tile - start if i > 0 else 0  # overlap with the previous tile
        after = start + tile - starts[i + 1] if i + 1 < len(starts) else 0  # ... and with the next
        if before > 0:
            ramps[i] = np.minimum(ramps[i], pos / before)
        if after > 0:
            ramps[i] = np.minimum(ramps[i], (tile - pos) / after)
    total = np.zeros(span)
    for i, start in enumerate(starts):
        total[start:start + tile] += ramps[i]
    weights = np.zeros((len(starts), tile), np.int32)
    best = np.full(span, -1.0)
    owner = np.zeros(span, np.int64)  # the tile with the largest ramp takes the rounding remainder
    for i, start in enumerate(starts):
        sl = slice(start, start + tile)
        weights[i] = np.floor(WEIGHT * ramps[i] / total[sl])
        better = ramps[i] > best[sl]
        best[sl] = np.where(better, ramps[i], best[sl])
        owner[sl] = np.where(better, i, owner[sl])
    given = np.zeros(span, np.int32)
    for i, start in enumerate(starts):
        given[start:start + tile] += weights[i]
    for i, start in enumerate(starts):
        mine = owner[start:start + tile] == i
        weights[i][mine] += (WEIGHT - given[start:start + tile])[mine]
    return weights


@dataclass(frozen=True)
class TilePlan:
    """Tiles over an image of ``size``: each ``tile`` in size, at ``xs`` x ``ys`` (row-major order)."""

    size: Extent  # the image being refined
    tile: Extent  # the size every tile is diffused at (multiples of 8)
    xs: tuple[int, ...]  # tile left edges
    ys: tuple[int, ...]  # tile top edges
    overlap: int  # the least overlap asked for (actual overlaps are at least this, up to rounding)

    @property
    def padded(self) -> Extent:
        """The image size after edge padding (bigger than ``size`` only on axes shorter than a tile)."""
        return Extent(max(self.size.width, self.tile.width), max(self.size.height, self.tile.height))

    @property
    def count(self) -> int:
        return len(self.xs) * len(self.ys)

    @property
    def tiles(self) -> list[Bounds]:
        """Every tile's bounds in the padded image, row by row."""
        return [Bounds(x, y, *self.tile) for y in self.ys for x in self.xs]

    @cached_property
    def weights_x(self) -> np.ndarray:
        return axis_weights(self.size.width, self.tile.width, self.xs)

    @cached_property
    def weights_y(self) -> np.ndarray:
        return axis_weights(self.size.height, self.tile.height, self.ys)

    def weight(self, index: int) -> np.ndarray:
        """Tile ``index``'s 2-D integer weights (tile.height x tile.width); all tiles sum to WEIGHT**2."""
        row, col = divmod(index, len(self.xs))
        return np.outer(self.weights_y[row], self.weights_x[col])

    def pad(self, image: np.ndarray) -> np.ndarray:
        """``image`` (HxW[xC] at ``size``) padded to ``padded`` by repeating its right and bottom edges."""
        h, w = image.shape[:2]
        if (w, h) != self.size.as_tuple():
            raise ValueError(f"image is {w}x{h} but the plan is for {self.size}")
        extra = [(0, self.padded.height - h), (0, self.padded.width - w)] + [(0, 0)] * (image.ndim - 2)
        return np.pad(image, extra, mode="edge") if any(e[1] for e in extra) else image

    def crops(self, image: np.ndarray) -> list[np.ndarray]:
        """The tiles' pixels from ``image`` (at ``size``), row by row."""
        padded = self.pad(image)
        return [padded[b.slices] for b in self.tiles]

    def to_dict(self) -> dict[str, Any]:
        return {"size": list(self.size), "tile": list(self.tile), "tiles": self.count,
                "grid": [len(self.xs), len(self.ys)], "overlap": self.overlap}


def plan_tiles(size: Extent | tuple[int, int], tile: Extent | tuple[int, int], overlap: int | None = None) -> TilePlan:
    """Cover ``size`` with tiles of ``tile`` (rounded down to multiples of 8) overlapping >= ``overlap`` px.

    ``overlap`` None: ``default_overlap``. It is capped at half a tile.
    """
    size = Extent(*size)
    tile = Extent(*(max(MULTIPLE, t // MULTIPLE * MULTIPLE) for t in tile))
    if size.is_empty:
        raise ValueError(f"cannot tile an empty image ({size})")
    overlap = default_overlap(tile) if overlap is None else overlap
    tw, xs = axis_tiles(size.width, tile.width, overlap)
    th, ys = axis_tiles(size.height, tile.height, overlap)
    return TilePlan(size, Extent(tw, th), xs, ys, overlap)


#: A refinement runs in one piece up to this many times the model's native area (2x a side), else in tiles.
ONE_PIECE_AREA = 4.0


def plan_refine(size: Extent | tuple[int, int], native: Extent | tuple[int, int]) -> TilePlan:
    """Tiles for refining an image of ``size`` with a model of ``native`` size (the second pass).

    Up to ``ONE_PIECE_AREA`` x the native area, with neither side over twice the native side, it
    is one tile of the whole image (sides rounded up to multiples of 8 by edge padding); a bigger
    image gets overlapping native-size tiles (``plan_tiles``).
    """
    size, native = Extent(*size), Extent(*native)
    one_piece = (size.area <= ONE_PIECE_AREA * native.area
                 and size.longest_side <= math.sqrt(ONE_PIECE_AREA) * native.longest_side)
    if one_piece:
        return plan_tiles(size, (math.ceil(size.width / MULTIPLE) * MULTIPLE,
                                 math.ceil(size.height / MULTIPLE) * MULTIPLE))
    return plan_tiles(size, native)


class TileBlender:
    """Blends refined tiles (HxWxC uint8 at ``plan.tile`` size), added in plan order, into one image.

    Memory: two int32 bands of about a tile's height and the image's width, plus the uint8 output.
    """

    def __init__(self, plan: TilePlan, channels: int = 3):
        self.plan = plan
        self.out = np.zeros((plan.size.height, plan.size.width, channels), np.uint8)
        self._index = 0
        self._band: np.ndarray | None = None  # accumulated rows [self._top, self._top + len(band))
        self._top = 0
        self._strip: np.ndarray | None = None  # the current tile row, blended across x (sums to WEIGHT)

    def add(self, tile: np.ndarray) -> None:
        plan = self.plan
        if self._index >= plan.count:
            raise ValueError(f"all {plan.count} tiles were already added")
        tile = np.asarray(tile)
        if tile.shape[:2] != (plan.tile.height, plan.tile.width) or tile.shape[2:] != self.out.shape[2:]:
            raise ValueError(f"tile {self._index} is {tile.shape}; expected {plan.tile.height}x{plan.tile.width}"
                             f"x{self.out.shape[2]}")
        row, col = divmod(self._index, len(plan.xs))
        if col == 0:
            self._strip = np.zeros((plan.tile.height, plan.padded.width, self.out.shape[2]), np.int32)
        assert self._strip is not None
        x = plan.xs[col]
        self._strip[:, x:x + plan.tile.width] += tile * plan.weights_x[col][None, :, None]
        self._index += 1
        if col == len(plan.xs) - 1:
            self._finish_row(row)

    def _finish_row(self, row: int) -> None:
        plan, strip = self.plan, self._strip
        assert strip is not None
        y = plan.ys[row]
        weighted = strip * plan.weights_y[row][:, None, None]
        bottom = y + plan.tile.height
        if self._band is None:
            self._band, self._top = weighted, y
        else:
            band = np.zeros((bottom - self._top,) + weighted.shape[1:], np.int32)
            band[: len(self._band)] = self._band
            band[y - self._top:] += weighted
            self._band = band
        final = plan.ys[row + 1] if row + 1 < len(plan.ys) else bottom  # rows no later tile touches
        done = self._band[: final - self._top]
        rows = min(final, plan.size.height) - self._top
        if rows > 0:
            w = plan.size.width
            values = (done[:rows, :w] + WEIGHT * WEIGHT // 2) // (WEIGHT * WEIGHT)
            self.out[self._top:self._top + rows] = values.astype(np.uint8)
        self._band, self._top = self._band[final - self._top:], final

    @property
    def complete(self) -> bool:
        return self._index == self.plan.count

    def result(self) -> np.ndarray:
        """The blended HxWxC image at ``plan.size`` (after all tiles were added)."""
        if not self.complete:
            raise ValueError(f"only {self._index} of {self.plan.count} tiles were added")
        return self.out


def blend(plan: TilePlan, tiles: list[np.ndarray]) -> np.ndarray:
    """All of ``plan``'s tiles (row-major) blended into one image at ``plan.size``."""
    blender = TileBlender(plan, tiles[0].shape[2] if tiles and tiles[0].ndim == 3 else 3)
    for tile in tiles:
        blender.add(tile)
    return blender.result()
