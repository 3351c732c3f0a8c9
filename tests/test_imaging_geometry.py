"""Extent/Bounds units and the stdlib-only send_region rule."""

import ast
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from easel.client import send_region as rules
from easel.client.send_region import context_bounds, expand_interval, send_region
from easel.server.imaging.geometry import Bounds, Extent, multiple_of

# ----------------------------------------------------------------------------- multiple_of / Extent


def test_multiple_of_modes():
    assert multiple_of(1001, 8) == 1000
    assert multiple_of(1004, 8) == 1008  # halves round up
    assert multiple_of(1001, 8, "up") == 1008
    assert multiple_of(1007, 8, "down") == 1000
    assert multiple_of(3, 8) == 8 and multiple_of(0, 8, "down") == 8  # never below one multiple
    with pytest.raises(ValueError):
        multiple_of(10, 8, "sideways")
    with pytest.raises(ValueError):
        multiple_of(10, 0)


def test_extent_basics():
    e = Extent(1001, 777)
    assert e.area == 1001 * 777 and not e.is_empty and Extent(0, 5).is_empty
    assert e.longest_side == 1001 and e.shortest_side == 777 and e.average_side == 889
    assert e.aspect == pytest.approx(1001 / 777)
    assert e.multiple_of(8) == Extent(1000, 776) and e.multiple_of(8, "up") == Extent(1008, 784)
    assert e.scale(0.5) == Extent(500, 388) and e.scale(2, 1) == Extent(2002, 777)
    assert Extent(512, 512).is_multiple_of(8) and not e.is_multiple_of(8)
    assert Extent(10, 10).fits_in(Extent(10, 11)) and not Extent(11, 10).fits_in(Extent(10, 11))
    assert tuple(e) == (1001, 777) == e.as_tuple() and str(e) == "1001x777"
    with pytest.raises(ValueError):
        Extent(-1, 4)


# ----------------------------------------------------------------------------- Bounds


def test_bounds_edges_and_construction():
    b = Bounds(10, 20, 30, 40)
    assert (b.left, b.top, b.right, b.bottom) == (10, 20, 40, 60)
    assert b.extent == Extent(30, 40) and b.area == 1200 and b.center == (25, 40)
    assert Bounds.of(Extent(5, 6), 1, 2) == Bounds(1, 2, 5, 6) == Bounds.from_box((1, 2, 5, 6))
    assert Bounds.from_points(5, 5, 2, 9) == Bounds(5, 5, 0, 4)  # inverted side -> empty
    assert tuple(b) == b.as_tuple() == (10, 20, 30, 40) and str(b) == "30x40+10+20"
    with pytest.raises(ValueError):
        Bounds(0, 0, -1, 1)


def test_bounds_from_mask():
    mask = np.zeros((50, 60), np.uint8)
    assert Bounds.from_mask(mask) is None
    mask[10:13, 40:45] = 255
    mask[30, 5] = 3
    assert Bounds.from_mask(mask) == Bounds(5, 10, 40, 21)
    assert Bounds.from_mask(mask, threshold=3) == Bounds(40, 10, 5, 3)
    full = np.full((7, 9), 1, np.uint8)
    assert Bounds.from_mask(full) == Bounds(0, 0, 9, 7)
    corner = np.zeros((7, 9), np.uint8)
    corner[-1, -1] = 255
    assert Bounds.from_mask(corner) == Bounds(8, 6, 1, 1)


def test_bounds_pad_intersect_clamp_union():
    b = Bounds(10, 10, 20, 20)
    assert b.pad(5) == Bounds(5, 5, 30, 30)
    assert b.pad(1, 2, 3, 4) == Bounds(9, 8, 24, 26)
    assert b.pad(-15) == Bounds(25, 25, 0, 0)
    assert b.intersect(Bounds(25, 0, 100, 15)) == Bounds(25, 10, 5, 5)
    assert b.intersect(Bounds(100, 100, 5, 5)).is_empty
    assert Bounds(-5, -5, 20, 20).clamp(Extent(10, 8)) == Bounds(0, 0, 10, 8)
    assert b.union(Bounds(0, 40, 1, 1)) == Bounds(0, 10, 30, 31)
    assert b.union(Bounds(99, 99, 0, 0)) == b and Bounds(99, 99, 0, 0).union(b) == b


def test_bounds_contains_offset_scale_slices():
    b = Bounds(10, 10, 20, 20)
    assert b.contains((10, 10)) and b.contains((29, 29)) and not b.contains((30, 29))
    assert b.contains(Bounds(10, 10, 20, 20)) and not b.contains(Bounds(9, 10, 20, 20))
    assert b.offset(5, -5) == Bounds(15, 5, 20, 20)
    assert b.relative_to(Bounds(10, 5, 1, 1)) == Bounds(0, 5, 20, 20)
    assert Bounds(3, 3, 5, 5).scale(0.5) == Bounds(1, 1, 3, 3)  # covers 1.5..4
    assert Bounds(4, 4, 4, 4).scale(0.5) == Bounds(2, 2, 2, 2)
    assert b.scale(2, 1) == Bounds(20, 10, 40, 20)
    arr = np.arange(100 * 100).reshape(100, 100)
    assert arr[b.slices].shape == (20, 20) and arr[b.slices][0, 0] == 10 * 100 + 10
    with pytest.raises(ValueError):
        _ = Bounds(-1, 0, 2, 2).slices


def test_bounds_expand_and_multiple_of():
    canvas = Bounds(0, 0, 100, 50)
    assert Bounds(40, 20, 4, 4).expand_to((20, 10)) == Bounds(32, 17, 20, 10)
    assert Bounds(0, 0, 4, 4).expand_to((20, 10), canvas) == Bounds(0, 0, 20, 10)  # shifted inside
    assert Bounds(96, 46, 4, 4).expand_to((20, 10), canvas) == Bounds(80, 40, 20, 10)
    assert Bounds(10, 10, 4, 4).expand_to((200, 80), canvas) == canvas  # capped by within
    assert Bounds(1, 1, 13, 9).multiple_of(8) == Bounds(0, -2, 16, 16)
    assert Bounds(1, 1, 13, 9).multiple_of(8, canvas) == Bounds(0, 0, 16, 16)
    assert Bounds(0, 0, 1001, 777).multiple_of(8, Bounds(0, 0, 1001, 777)) == Bounds(0, 0, 1001, 777)
    assert Bounds(0, 0, 16, 8).multiple_of(8) == Bounds(0, 0, 16, 8)


@settings(max_examples=200, deadline=None)
@given(st.integers(-50, 50), st.integers(0, 60), st.integers(0, 120), st.integers(-60, 60), st.integers(1, 150))
def test_expand_interval_contains_and_stays_inside(start, size, want, lo, span):
    hi = lo + span
    start = min(max(start, lo), hi)
    size = min(size, hi - start)
    s, n = expand_interval(start, size, want, lo, hi)
    assert lo <= s and s + n <= hi
    assert s <= start and start + size <= s + n
    assert n == max(size, min(want, span))


# ----------------------------------------------------------------------------- send_region


def test_send_region_is_stdlib_only():
    path = Path(rules.__file__)
    tree = ast.parse(path.read_text())
    names = {a.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    names |= {node.module.split(".")[0] for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert not any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(tree)), "no relative imports"
    assert names <= set(sys.stdlib_module_names) | {"__future__"}, names


def test_send_region_whole_canvas_without_selection():
    assert send_region(None, (640, 480)) == (0, 0, 640, 480)
    assert send_region((10, 10, 0, 0), (640, 480)) == (0, 0, 640, 480)
    assert send_region((700, 10, 20, 20), (640, 480)) == (0, 0, 640, 480)  # entirely off canvas


def test_send_region_defaults():
    # 100x60 selection: avg 80 -> grow 4 (min), feather 6, padding max(32, 20, 4 + 6 + 8) = 32
    assert rules.resolve(100, 60) == (4, 6, 0.25)
    assert rules.context_padding(100, 60) == 32
    assert rules.resolve(1000, 1000) == (40, 80, 0.25)
    assert rules.resolve(10, 10) == (4, 3, 0.25)
    assert rules.context_padding(1000, 1000) == 250
    assert rules.context_padding(10, 10, grow=40, feather=40) == 88  # bands always fit
    assert rules.context_padding(1000, 1000, padding=0.5) == 500
    with pytest.raises(ValueError):
        rules.resolve(10, 10, grow=-1)


@pytest.mark.parametrize("sel", [(0, 0, 40, 30), (600, 0, 40, 30), (0, 450, 40, 30), (600, 450, 40, 30),
                                 (300, 0, 40, 30), (0, 200, 40, 30), (300, 220, 40, 30), (5, 5, 1, 1)])
def test_send_region_contains_selection_at_corners_and_edges(sel):
    canvas = (640, 480)
    x, y, w, h = send_region(sel, canvas)
    assert 0 <= x and 0 <= y and x + w <= 640 and y + h <= 480
    assert x <= sel[0] and y <= sel[1] and sel[0] + sel[2] <= x + w and sel[1] + sel[3] <= y + h
    assert w % 8 == 0 and h % 8 == 0 and w >= 64 and h >= 64
    pad = rules.context_padding(sel[2], sel[3])
    # context on every side the canvas allows
    assert x == 0 or sel[0] - x >= pad
    assert x + w == 640 or x + w - sel[0] - sel[2] >= pad


def test_send_region_cost_is_independent_of_canvas_size():
    small = send_region((256, 256, 512, 512), (1024, 1024))
    big = send_region((4000, 4000, 512, 512), (8192, 8192))
    assert small[2:] == big[2:] == (768, 768)


def test_send_region_small_canvas_and_odd_canvas():
    assert send_region((2, 2, 3, 3), (40, 30)) == (0, 0, 40, 30)
    x, y, w, h = send_region((900, 700, 101, 77), (1001, 777))
    assert x + w <= 1001 and y + h <= 777 and (w % 8, h % 8) == (0, 0)


def test_context_bounds_respects_a_limit_not_at_origin():
    box = context_bounds((110, 110, 10, 10), (100, 100, 50, 50))
    assert box == (100, 100, 50, 50)
    box = context_bounds((500, 500, 10, 10), (100, 100, 1000, 1000))
    assert box[0] >= 100 and box[2] == 80
