"""prepare/composite end to end with stand-in engines: bit-exact outside, seams, offsets, fill."""

import numpy as np
import pytest
from PIL import Image as PILImage

from easel.server.imaging.compose import LayerResult, as_mask, as_rgba, composite, flatten, prepare, resize
from easel.server.imaging.fill import EMPTY_FILL, fill_transparent
from easel.server.imaging.geometry import Bounds, Extent
from easel.server.imaging.masks import composite_mask
from easel.server.imaging.metrics import gradient_magnitude, seam_bands, seam_ratio
from easel.server.imaging.region import plan_txt2img, plan_work
from helpers.pictures import box_mask, texture

SD1 = Extent(512, 512)
DEMO = Extent(64, 64)


def fake_engine(work_image, seed=1):
    """A 'generated' image at working size: unrelated content."""
    w, h = work_image.size
    return PILImage.fromarray(texture(w, h, seed=seed + 100, amp=90)[..., :3])


def full_composite_mask(plan, mask):
    """The compositing mask over the whole sent image (zero outside the region)."""
    out = np.zeros_like(mask)
    out[plan.region.slices] = composite_mask(mask[plan.region.slices], plan.feather)
    return out


# ----------------------------------------------------------------------------- fill


def test_fill_keeps_opaque_pixels_and_fills_from_neighbours():
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[:, :30] = (200, 30, 10, 255)
    rgba[:, 30:, :3] = (0, 0, 255)  # colour under full transparency must not leak
    out = fill_transparent(rgba)
    assert np.array_equal(out[:, :30], rgba[:, :30, :3])
    assert np.abs(out[:, 30:].astype(int) - (200, 30, 10)).max() <= 1


def test_fill_blends_between_colours_and_handles_extremes():
    rgba = np.zeros((32, 64, 4), np.uint8)
    rgba[:, :8] = (255, 0, 0, 255)
    rgba[:, -8:] = (0, 0, 255, 255)
    mid = fill_transparent(rgba)[16, 32].astype(int)
    assert 60 < mid[0] < 200 and 60 < mid[2] < 200  # a blend of both sides
    assert (fill_transparent(np.zeros((5, 7, 4), np.uint8)) == EMPTY_FILL).all()
    semi = np.full((4, 4, 4), 100, np.uint8)  # all semi-transparent grey
    assert np.abs(fill_transparent(semi).astype(int) - 100).max() <= 1
    opaque = texture(9, 5)
    assert np.array_equal(fill_transparent(opaque), opaque[..., :3])
    with pytest.raises(ValueError):
        fill_transparent(np.zeros((4, 4, 3), np.uint8))


def test_prepare_fills_transparency_before_diffusion():
    image = texture(512, 512)
    image[:, 256:, 3] = 0
    image[:, 256:, :3] = 0
    work, mask = prepare(plan_work((512, 512), None, SD1), image, None)
    arr = np.asarray(work)
    assert mask is None and work.size == (512, 512)
    assert arr[:, 300:].mean() > 60  # no black hole: filled from the opaque half
    assert np.array_equal(arr[:, :256], image[:, :256, :3])


# ----------------------------------------------------------------------------- prepare


def test_prepare_at_one_to_one_does_not_resample():
    image = texture(640, 480)
    mask = box_mask(640, 480, (150, 100, 400, 300))
    plan = plan_work((640, 480), mask, SD1)
    work, wmask = prepare(plan, image, mask)
    assert plan.work == plan.region.extent
    assert np.array_equal(np.asarray(work), image[plan.region.slices][..., :3])
    assert wmask.mode == "L" and wmask.size == work.size
    local = mask[plan.region.slices]
    assert np.asarray(wmask)[local > 0].min() == 255


def test_prepare_scales_small_regions_to_native():
    image = texture(1000, 800)
    mask = box_mask(1000, 800, (500, 400, 40, 30))
    plan = plan_work((1000, 800), mask, SD1)
    work, wmask = prepare(plan, image, mask)
    assert work.size == wmask.size == plan.work.as_tuple() and work.mode == "RGB"
    assert plan.work.area >= 0.75 * SD1.area
    assert prepare(plan_txt2img((64, 64), DEMO), None) == (None, None)


def test_as_rgba_and_as_mask_accept_pil_and_arrays():
    gray = np.full((3, 4), 9, np.uint8)
    assert as_rgba(gray).shape == (3, 4, 4) and as_rgba(gray)[0, 0, 3] == 255
    assert as_rgba(PILImage.new("RGB", (4, 3), (1, 2, 3)))[0, 0].tolist() == [1, 2, 3, 255]
    assert as_mask(PILImage.fromarray(gray)).tolist() == gray.tolist()
    with pytest.raises(ValueError):
        as_rgba(np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError):
        as_mask(np.zeros((3, 4, 1), np.uint8))


# ----------------------------------------------------------------------------- composite


@pytest.mark.parametrize("box", [(0, 0, 90, 70), (550, 0, 90, 70), (0, 410, 90, 70), (550, 410, 90, 70),
                                 (270, 200, 90, 70), (300, 0, 9, 480)])
@pytest.mark.parametrize("origin", [(0, 0), (1500, 3000)])
def test_composite_is_bit_exact_outside_and_replaces_inside(box, origin):
    image = texture(640, 480)
    mask = box_mask(640, 480, box)
    plan = plan_work((640, 480), mask, SD1, origin=origin, canvas=(origin[0] + 640, origin[1] + 480))
    work, _ = prepare(plan, image, mask)
    generated = fake_engine(work)
    layer = composite(plan, image, mask, generated)
    # offsets: the layer lies on the canvas and covers the selection, in document coordinates
    sel_doc = Bounds(*box).offset(*origin)
    assert layer.bounds.contains(sel_doc)
    assert Bounds(origin[0], origin[1], 640, 480).contains(layer.bounds)
    flat = flatten(image, layer, origin)
    cmask = full_composite_mask(plan, mask)
    assert np.array_equal(flat[cmask == 0], image[cmask == 0])  # nothing else changed
    expected = np.zeros_like(image[..., :3])
    expected[plan.region.slices] = resize(np.asarray(generated), plan.region.extent)
    assert np.array_equal(flat[mask == 255][:, :3], expected[mask == 255])  # inside fully replaced
    band = (cmask > 0) & (cmask < 255)
    assert band.any() and (layer.rgba[..., 3] > 0).sum() == (cmask > 0).sum()


def test_layer_is_transparent_outside_the_compositing_mask():
    image = texture(300, 200)
    mask = box_mask(300, 200, (100, 80, 50, 40))
    plan = plan_work((300, 200), mask, SD1)
    layer = composite(plan, image, mask, fake_engine(prepare(plan, image, mask)[0]))
    cmask = full_composite_mask(plan, mask)
    bounds = Bounds.from_mask(cmask)
    assert layer.bounds == bounds  # cropped to where something changes
    assert np.array_equal(layer.rgba[..., 3], cmask[bounds.slices])
    zero = layer.rgba[..., 3] == 0
    assert np.array_equal(layer.rgba[..., :3][zero], image[bounds.slices][..., :3][zero])


def test_soft_selection_blends_proportionally():
    image = texture(256, 256)
    mask = box_mask(256, 256, (80, 80, 96, 96), value=128)
    plan = plan_work((256, 256), mask, SD1, feather=0)
    generated = fake_engine(prepare(plan, image, mask)[0])
    flat = flatten(image, composite(plan, image, mask, generated)).astype(int)
    gen = np.zeros((256, 256, 3), np.uint8)
    gen[plan.region.slices] = resize(np.asarray(generated), plan.region.extent)
    inside = mask == 128
    want = (gen[inside].astype(int) * 128 + image[inside][:, :3].astype(int) * 127) / 255
    assert np.abs(flat[inside][:, :3] - want).max() <= 1
    assert np.array_equal(flat[~inside], image[~inside])  # feather 0: nothing outside the selection


def test_full_canvas_img2img_and_txt2img_layers():
    image = texture(1001, 777)
    plan = plan_work((1001, 777), None, SD1)
    work, mask = prepare(plan, image, None)
    layer = composite(plan, image, None, work)
    assert (layer.x, layer.y, layer.width, layer.height) == (0, 0, 1001, 777)
    assert (layer.rgba[..., 3] == 255).all()
    assert np.abs(layer.rgba[..., :3].astype(int) - image[..., :3]).mean() < 4  # identity engine, resampled
    txt = plan_txt2img((512, 384), DEMO, origin=(7, 9))
    layer = composite(txt, None, None, PILImage.new("RGB", txt.work.as_tuple(), (10, 200, 30)))
    assert (layer.x, layer.y, layer.width, layer.height) == (7, 9, 512, 384)
    assert layer.rgba[200, 300].tolist() == [10, 200, 30, 255]


def test_odd_size_round_trip_is_exact():
    image = texture(1001, 777)
    mask = box_mask(1001, 777, (930, 700, 71, 77))  # touches the right and bottom edges
    plan = plan_work((1001, 777), mask, DEMO)
    layer = composite(plan, image, mask, fake_engine(prepare(plan, image, mask)[0]))
    assert layer.bounds.right == 1001 and layer.bounds.bottom == 777
    flat = flatten(image, layer)
    assert flat.shape == image.shape
    assert np.array_equal(flat[:, :850], image[:, :850])


def test_identity_engine_at_one_to_one_changes_nothing():
    image = texture(640, 480)
    mask = box_mask(640, 480, (100, 100, 400, 300))
    plan = plan_work((640, 480), mask, SD1)
    work, _ = prepare(plan, image, mask)
    assert plan.scale == (1.0, 1.0)
    assert np.array_equal(flatten(image, composite(plan, image, mask, work)), image)


def test_transparent_canvas_area_is_painted_opaque_inside_the_selection():
    image = texture(400, 300)
    image[:, 200:] = 0  # the right half is empty canvas (outpainting)
    mask = box_mask(400, 300, (180, 50, 120, 200))
    plan = plan_work((400, 300), mask, SD1)
    work, _ = prepare(plan, image, mask)
    layer = composite(plan, image, mask, fake_engine(work))
    flat = flatten(image, layer)
    assert (flat[mask == 255][:, 3] == 255).all()
    assert (flat[:, 350:, 3] == 0).all()  # outside the selection's band the canvas stays empty


def test_composite_checks_its_inputs():
    image = texture(64, 64)
    plan = plan_work((64, 64), None, DEMO)
    with pytest.raises(ValueError):
        composite(plan, image, None, np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError):
        prepare(plan, texture(65, 64), None)


def test_flatten_over_a_transparent_base_and_off_canvas_layers():
    base = np.zeros((10, 10, 4), np.uint8)
    layer = LayerResult(np.full((4, 4, 4), (10, 20, 30, 128), np.uint8), 8, 8)
    out = flatten(base, layer)
    assert out[9, 9].tolist() == [10, 20, 30, 128] and out[7, 7].tolist() == [0, 0, 0, 0]
    assert np.array_equal(flatten(base, LayerResult(layer.rgba, 50, 50)), base)


# ----------------------------------------------------------------------------- seams


def test_seam_metric_and_feathered_composite_hides_the_seam():
    image = texture(256, 256, seed=3)
    mask = box_mask(256, 256, (78, 78, 100, 100))

    def seam(feather):
        plan = plan_work((256, 256), mask, SD1, feather=feather)
        work, _ = prepare(plan, image, mask)
        # a plausible model output: the context's look, but brighter and with its own grain
        gen = np.asarray(work).astype(int) + 45 + np.random.default_rng(1).normal(0, 3, (*work.size[::-1], 3))
        generated = PILImage.fromarray(np.clip(gen, 0, 255).astype(np.uint8))
        return seam_ratio(flatten(image, composite(plan, image, mask, generated)), mask)

    untouched = seam_ratio(image, mask)
    hard, default, wide = seam(0), seam(None), seam(16)
    assert 0.7 < untouched < 1.4  # the metric sees no seam where there is none
    assert hard > 3 * untouched  # a hard paste of a brighter patch is an obvious seam
    assert default < hard / 2 and wide < default and wide < 1.3 * untouched


def test_seam_bands_and_gradient():
    mask = box_mask(40, 40, (10, 10, 20, 20))
    border, inside = seam_bands(mask, 2)
    assert border[10, 20] and border[8, 20] and not border[5, 20] and inside[20, 20] and not inside[13, 20]
    flat = np.full((8, 8, 4), 50, np.uint8)
    assert gradient_magnitude(flat).max() == 0
    with pytest.raises(ValueError):
        seam_ratio(flat, np.zeros((8, 8), np.uint8))
