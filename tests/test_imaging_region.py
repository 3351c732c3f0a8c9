"""Work planning: regions for every corner/edge, tiny and odd sizes, scaling to native."""

import numpy as np
import pytest

from easel.client import send_region as rules
from easel.client.protocol import GenerateRequest
from easel.client.send_region import send_region
from easel.server.families import Family
from easel.server.imaging.geometry import Bounds, Extent
from easel.server.imaging.region import (
    KEEP_SCALE,
    native_size,
    plan_generation,
    plan_txt2img,
    plan_work,
    work_size,
)

SD1 = Extent(512, 512)


def selection(size, box, value=255):
    w, h = size
    mask = np.zeros((h, w), np.uint8)
    x, y, bw, bh = box
    mask[y: y + bh, x: x + bw] = value
    return mask


def check_region(plan, sel):
    """The region holds the selection and its grow/feather bands (where the image allows)."""
    img = Bounds.of(plan.image)
    assert img.contains(plan.region) and plan.region.contains(sel)
    band = sel.pad(plan.grow + plan.feather).clamp(plan.image)
    assert plan.region.contains(band)
    assert plan.work.is_multiple_of(8)


# ----------------------------------------------------------------------------- work size


def test_work_size_keeps_near_native_regions_one_to_one():
    assert work_size(Extent(512, 512), SD1) == Extent(512, 512)
    assert work_size(Extent(640, 480), SD1) == Extent(640, 480)
    assert work_size(Extent(448, 448), SD1) == Extent(448, 448)  # 0.77 x native area
    assert work_size(Extent(1024, 1024), Extent(1024, 1024)) == Extent(1024, 1024)


def test_work_size_scales_small_up_and_large_down_keeping_aspect():
    for region in (Extent(100, 60), Extent(2000, 1500), Extent(1001, 777), Extent(72, 72), Extent(4096, 1024)):
        work = work_size(region, SD1)
        assert work.is_multiple_of(8)
        assert KEEP_SCALE[0] * 0.8 < work.area / SD1.area < KEEP_SCALE[1]
        assert work.aspect == pytest.approx(region.aspect, rel=0.1)
    assert work_size(Extent(1001, 777), Extent(64, 64)) == Extent(72, 56)


def test_work_size_caps_the_long_side():
    work = work_size(Extent(8000, 100), SD1)
    assert work.width == 1024 and work.height == 16
    with pytest.raises(ValueError):
        work_size(Extent(0, 10), SD1)


def test_native_size_per_family():
    """The family's native size (``Family.native``) unless the model declares its own; SD 1.x's if unknown."""
    for family in Family:
        assert native_size(family) == native_size(family.value) == Extent(family.native, family.native)
    assert native_size("sdxl") == Extent(1024, 1024) and native_size(Family.DEMO) == Extent(64, 64)
    assert native_size("unknown") == SD1 and native_size("sdxl", (832, 1216)) == Extent(832, 1216)


# ----------------------------------------------------------------------------- plans


@pytest.mark.parametrize("mask", [None, "zeros"])
def test_empty_selection_means_the_whole_image(mask):
    m = np.zeros((480, 640), np.uint8) if mask == "zeros" else None
    plan = plan_work((640, 480), m, SD1)
    assert plan.mode == "img2img" and plan.region == Bounds(0, 0, 640, 480) and plan.selection is None
    assert plan.work == Extent(640, 480) and plan.scale == (1.0, 1.0)
    assert plan_work((640, 480), None, SD1, has_image=False).mode == "txt2img"


CORNERS_AND_EDGES = {"top-left": (0, 0), "top-right": (880, 0), "bottom-left": (0, 710),
                     "bottom-right": (880, 710), "top": (440, 0), "left": (0, 355), "right": (880, 355),
                     "bottom": (440, 710), "center": (440, 355)}


@pytest.mark.parametrize("where", sorted(CORNERS_AND_EDGES))
def test_selection_at_every_corner_and_edge(where):
    size = Extent(1000, 800)
    sel = Bounds(*CORNERS_AND_EDGES[where], 120, 90)
    plan = plan_work(size, selection(size, sel.as_tuple()), SD1)
    assert plan.mode == "inpaint" and plan.selection == sel
    check_region(plan, sel)
    pad = rules.context_padding(120, 90)
    assert plan.region.x == 0 or sel.x - plan.region.x >= pad
    assert plan.region.y == 0 or sel.y - plan.region.y >= pad
    assert plan.region.right == 1000 or plan.region.right - sel.right >= pad
    assert plan.region.bottom == 800 or plan.region.bottom - sel.bottom >= pad
    assert plan.region.width % 8 == 0 and plan.region.height % 8 == 0


@pytest.mark.parametrize("box", [(500, 400, 1, 1), (0, 0, 3, 2), (995, 795, 5, 5), (0, 400, 15, 15)])
def test_tiny_selections_get_a_workable_region(box):
    size = Extent(1000, 800)
    plan = plan_work(size, selection(size, box), SD1)
    assert plan.region.width >= rules.MIN_REGION and plan.region.height >= rules.MIN_REGION
    check_region(plan, Bounds(*box))
    assert plan.work.area >= SD1.area * KEEP_SCALE[0]  # scaled up to the model's size


def test_tiny_image_uses_all_of_it():
    plan = plan_work((20, 12), selection((20, 12), (5, 5, 2, 2)), SD1)
    assert plan.region == Bounds(0, 0, 20, 12) and plan.work.is_multiple_of(8)


def test_odd_sizes_plan_exact_regions():
    size = Extent(1001, 777)
    whole = plan_work(size, None, SD1)
    assert whole.region == Bounds(0, 0, 1001, 777) and whole.work.is_multiple_of(8)
    plan = plan_work(size, selection(size, (950, 700, 51, 77)), SD1)
    assert plan.region.right == 1001 and plan.region.bottom == 777
    check_region(plan, Bounds(950, 700, 51, 77))


def test_overrides_and_defaults_are_recorded():
    size = Extent(1000, 800)
    mask = selection(size, (400, 300, 200, 200))
    plan = plan_work(size, mask, SD1)
    assert (plan.grow, plan.feather, plan.padding) == rules.resolve(200, 200)
    plan = plan_work(size, mask, SD1, grow=0, feather=20, padding=1.0)
    assert (plan.grow, plan.feather, plan.padding) == (0, 20, 1.0)
    assert plan.region == Bounds(200, 100, 600, 600)
    assert plan.to_dict()["selection"] == [400, 300, 200, 200]


def test_canvas_and_origin():
    # a 300x300 image sent at (900, 900) on a 1000x1000 canvas: only 100x100 of it is on the canvas
    mask = selection((300, 300), (20, 20, 30, 30))
    plan = plan_work((300, 300), mask, SD1, origin=(900, 900), canvas=(1000, 1000))
    assert Bounds(0, 0, 100, 100).contains(plan.region)
    assert plan.document_region == plan.region.offset(900, 900)
    with pytest.raises(ValueError):
        plan_work((300, 300), None, SD1, origin=(2000, 0), canvas=(1000, 1000))


def test_bad_inputs():
    with pytest.raises(ValueError):
        plan_work((10, 10), np.zeros((11, 10), np.uint8), SD1)
    with pytest.raises(ValueError):
        plan_work((10, 10), np.ones((10, 10), np.uint8), SD1, has_image=False)
    with pytest.raises(ValueError):
        plan_work((0, 10), None, SD1)


def test_txt2img_far_from_native_runs_near_native():
    plan = plan_txt2img((512, 384), (64, 64), origin=(10, 20))
    assert plan.mode == "txt2img" and plan.work == Extent(72, 56)
    assert plan.region == Bounds(0, 0, 512, 384) and plan.document_region == Bounds(10, 20, 512, 384)
    assert plan_txt2img((512, 512), SD1).work == SD1


def test_plan_request_maps_the_protocol_fields():
    req = GenerateRequest(job="j", prompt="p", x=100, y=50, canvas_width=2000, canvas_height=1000,
                          grow=3, feather=5, padding=0.5)
    image = np.zeros((400, 600, 4), np.uint8)
    mask = selection((600, 400), (200, 100, 100, 100))
    plan = plan_generation(req, image, mask, SD1)
    assert plan.origin == (100, 50) and (plan.grow, plan.feather, plan.padding) == (3, 5, 0.5)
    assert plan.region == Bounds(150, 50, 200, 200)
    txt = plan_generation(GenerateRequest(job="j", prompt="p", width=1001, height=777), None, None, SD1)
    assert txt.mode == "txt2img" and txt.image == Extent(1001, 777)
    native = plan_generation(GenerateRequest(job="j", prompt="p"), None, None, SD1)
    assert native.image == SD1


def test_plugin_send_region_gives_the_server_what_it_needs():
    canvas = (4000, 3000)
    for sel in [(100, 100, 300, 200), (0, 0, 50, 50), (3900, 2950, 100, 50), (2000, 10, 7, 900)]:
        x, y, w, h = send_region(sel, canvas)
        mask = selection((w, h), (sel[0] - x, sel[1] - y, sel[2], sel[3]))
        plan = plan_work((w, h), mask, SD1, origin=(x, y), canvas=canvas)
        local = Bounds(sel[0] - x, sel[1] - y, sel[2], sel[3])
        assert plan.selection == local
        check_region(plan, local)
        doc_band = Bounds(*sel).pad(plan.grow + plan.feather).clamp(canvas)
        assert plan.document_region.contains(doc_band)
