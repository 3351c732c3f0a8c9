"""Small immutable pixel geometry: ``Extent`` (a size) and ``Bounds`` (a rectangle).

Integer pixels; ``Bounds`` is half-open (``right = x + width`` is the first column outside).
No numpy import: ``Bounds.from_mask`` only uses array methods, so this works without numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ...client.send_region import expand_interval


def multiple_of(value: float, multiple: int, mode: str = "nearest") -> int:
    """``value`` rounded to a multiple of ``multiple`` ("nearest", "up" or "down"), at least ``multiple``."""
    if multiple < 1:
        raise ValueError(f"multiple must be positive (got {multiple})")
    steps = value / multiple
    if mode == "nearest":
        n = math.floor(steps + 0.5)
    elif mode == "up":
        n = math.ceil(steps)
    elif mode == "down":
        n = math.floor(steps)
    else:
        raise ValueError(f"mode must be 'nearest', 'up' or 'down' (got {mode!r})")
    return max(1, n) * multiple


@dataclass(frozen=True)
class Extent:
    """A size in pixels."""

    width: int
    height: int

    def __post_init__(self) -> None:
        if self.width < 0 or self.height < 0:
            raise ValueError(f"an extent cannot be negative ({self.width}x{self.height})")

    def __iter__(self):
        return iter((self.width, self.height))

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def area(self) -> int:
        return self.width * self.height

    @property
    def is_empty(self) -> bool:
        return self.width == 0 or self.height == 0

    @property
    def aspect(self) -> float:
        """Width over height."""
        return self.width / self.height

    @property
    def longest_side(self) -> int:
        return max(self.width, self.height)

    @property
    def shortest_side(self) -> int:
        return min(self.width, self.height)

    @property
    def average_side(self) -> float:
        return (self.width + self.height) / 2

    def scale(self, factor: float, factor_y: float | None = None) -> Extent:
        """Scaled and rounded to whole pixels."""
        fy = factor if factor_y is None else factor_y
        return Extent(round(self.width * factor), round(self.height * fy))

    def multiple_of(self, multiple: int, mode: str = "nearest") -> Extent:
        """Both sides rounded to multiples of ``multiple`` (never below ``multiple``)."""
        return Extent(multiple_of(self.width, multiple, mode), multiple_of(self.height, multiple, mode))

    def is_multiple_of(self, multiple: int) -> bool:
        return self.width % multiple == 0 and self.height % multiple == 0

    def fits_in(self, other: Extent) -> bool:
        return self.width <= other.width and self.height <= other.height

    def as_tuple(self) -> tuple[int, int]:
        return self.width, self.height


@dataclass(frozen=True)
class Bounds:
    """A rectangle ``x, y, width, height`` in pixels (half-open on the right and bottom)."""

    x: int
    y: int
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.width < 0 or self.height < 0:
            raise ValueError(f"bounds cannot have a negative size ({self.width}x{self.height})")

    def __iter__(self):
        return iter((self.x, self.y, self.width, self.height))

    def __str__(self) -> str:
        return f"{self.width}x{self.height}+{self.x}+{self.y}"

    # -------------------------------------------------------------- construction

    @classmethod
    def of(cls, extent: Extent | tuple[int, int], x: int = 0, y: int = 0) -> Bounds:
        """A rectangle of size ``extent`` at ``x, y`` (default: the origin)."""
        w, h = extent
        return cls(x, y, w, h)

    @classmethod
    def from_box(cls, box: tuple[int, int, int, int]) -> Bounds:
        return cls(*(int(v) for v in box))

    @classmethod
    def from_points(cls, left: int, top: int, right: int, bottom: int) -> Bounds:
        """From edges (``right``/``bottom`` exclusive); an inverted pair gives an empty side."""
        return cls(left, top, max(0, right - left), max(0, bottom - top))

    @classmethod
    def from_mask(cls, mask: Any, threshold: int = 0) -> Bounds | None:
        """Bounds of the pixels of a 2-D array above ``threshold``; None when there are none."""
        hit = mask > threshold
        cols = hit.any(axis=0).nonzero()[0]
        if len(cols) == 0:
            return None
        rows = hit.any(axis=1).nonzero()[0]
        return cls.from_points(int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)

    # -------------------------------------------------------------- properties

    @property
    def extent(self) -> Extent:
        return Extent(self.width, self.height)

    @property
    def left(self) -> int:
        return self.x

    @property
    def top(self) -> int:
        return self.y

    @property
    def right(self) -> int:
        return self.x + self.width

    @property
    def bottom(self) -> int:
        return self.y + self.height

    @property
    def area(self) -> int:
        return self.extent.area

    @property
    def is_empty(self) -> bool:
        return self.extent.is_empty

    @property
    def center(self) -> tuple[float, float]:
        return self.x + self.width / 2, self.y + self.height / 2

    @property
    def slices(self) -> tuple[slice, slice]:
        """``array[bounds.slices]`` crops a row-major (y, x, ...) array; bounds must lie inside it."""
        if self.x < 0 or self.y < 0:
            raise ValueError(f"bounds {self} start outside the array")
        return slice(self.y, self.bottom), slice(self.x, self.right)

    def as_tuple(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.width, self.height

    # -------------------------------------------------------------- operations

    def offset(self, dx: int, dy: int) -> Bounds:
        """Moved by ``dx, dy``."""
        return Bounds(self.x + dx, self.y + dy, self.width, self.height)

    def relative_to(self, other: Bounds) -> Bounds:
        """The same rectangle in the coordinates of ``other`` (whose top-left becomes 0, 0)."""
        return self.offset(-other.x, -other.y)

    def pad(self, left: int, top: int | None = None, right: int | None = None, bottom: int | None = None) -> Bounds:
        """Grown by ``left`` on every side, or per side; negative values shrink (never below 0)."""
        top = left if top is None else top
        right = left if right is None else right
        bottom = top if bottom is None else bottom
        return Bounds.from_points(self.x - left, self.y - top, self.right + right, self.bottom + bottom)

    def intersect(self, other: Bounds) -> Bounds:
        """The overlap; an empty rectangle (size 0) when there is none."""
        return Bounds.from_points(max(self.x, other.x), max(self.y, other.y),
                                  min(self.right, other.right), min(self.bottom, other.bottom))

    def clamp(self, extent: Extent | tuple[int, int]) -> Bounds:
        """Intersected with the rectangle ``0, 0, extent``."""
        return self.intersect(Bounds.of(extent))

    def union(self, other: Bounds) -> Bounds:
        """The smallest rectangle holding both (an empty side is ignored)."""
        if self.is_empty:
            return other
        if other.is_empty:
            return self
        return Bounds.from_points(min(self.x, other.x), min(self.y, other.y),
                                  max(self.right, other.right), max(self.bottom, other.bottom))

    def contains(self, other: Bounds | tuple[int, int]) -> bool:
        """Whether a point ``(x, y)`` or a whole rectangle lies inside."""
        if isinstance(other, Bounds):
            return (self.x <= other.x and self.y <= other.y
                    and other.right <= self.right and other.bottom <= self.bottom)
        px, py = other
        return self.x <= px < self.right and self.y <= py < self.bottom

    def scale(self, factor: float, factor_y: float | None = None) -> Bounds:
        """Scaled about the origin; the result covers every pixel the scaled rectangle touches."""
        fy = factor if factor_y is None else factor_y
        eps = 1e-9
        return Bounds.from_points(math.floor(self.x * factor + eps), math.floor(self.y * fy + eps),
                                  math.ceil(self.right * factor - eps), math.ceil(self.bottom * fy - eps))

    def expand_to(self, extent: Extent | tuple[int, int], within: Bounds | None = None) -> Bounds:
        """Widened (centred) to at least ``extent``, shifted to stay inside ``within`` (which caps the size)."""
        want_w, want_h = extent
        lim = within or Bounds(-(2**62), -(2**62), 2**63, 2**63)
        x, w = expand_interval(self.x, self.width, want_w, lim.x, lim.right)
        y, h = expand_interval(self.y, self.height, want_h, lim.y, lim.bottom)
        return Bounds(x, y, w, h)

    def multiple_of(self, multiple: int, within: Bounds | None = None) -> Bounds:
        """Sides widened (centred) up to multiples of ``multiple``, kept inside ``within``.

        Where ``within`` is too small for the next multiple, that side becomes ``within``'s.
        """
        want = Extent(multiple_of(self.width, multiple, "up"), multiple_of(self.height, multiple, "up"))
        return self.expand_to(want, within)
