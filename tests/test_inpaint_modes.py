"""Selection modes (``inpaint_mode``: refine, fill, add, remove, expand; ``expand`` margins): the automatic
choice, the pre-fill, the colour match only inside the blend band, each mode on the tiny model and the demo
(remove leaves no trace of a shape on a plain background), expand's sizes and bit-exact old pixels, refine
equal to the selection work before the modes, and ``easel generate --expand`` against a real server.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from PIL import ImageDraw

from easel.client.protocol import GenerateRequest, ProtocolError
from easel.server.engine import Engine
from easel.server.generation import check_attachments, run_generation
from easel.server.imaging import modes
from easel.server.imaging.compose import LayerResult, composite, flatten, prepare
from easel.server.imaging.geometry import Bounds, Extent
from easel.server.imaging.masks import composite_mask
from easel.server.imaging.region import plan_generation
from easel.server.limits import Limits
from easel.server.selection_modes import setup_mode
from easel.server.work import Inputs, engine_job
from helpers.pictures import box_mask, rgba_image, texture

torch.set_num_threads(1)  # 2 shared cores
BACKGROUND = (200, 190, 170)


def drawn_circle(size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A red disc on a plain background (RGBA) and a selection a little larger than the disc."""
    picture = PILImage.new("RGBA", (size, size), (*BACKGROUND, 255))
    ImageDraw.Draw(picture).ellipse((22, 20, 42, 40), fill=(200, 30, 30, 255))
    selection = PILImage.new("L", (size, size), 0)
    ImageDraw.Draw(selection).ellipse((18, 16, 46, 44), fill=255)
    return np.array(picture), np.array(selection)


def generate(engine, image, mask=None, **fields):
    fields = {"prompt": "a red circle", "steps": 2, "seed": 5, **fields}
    request = GenerateRequest(job="j", preview=False, **fields)
    inputs = Inputs("img2img" if mask is None else "inpaint", image, mask)
    return run_generation(engine, request, inputs, engine.model_info(None), lambda p: None, lambda: False)


def layer_of(out, i: int = 0) -> LayerResult:
    layer = out.layers[i]
    return LayerResult(layer.rgba, layer.x, layer.y)


@pytest.fixture(scope="module")
def tiny(tiny_sd_path):
    with Engine([tiny_sd_path], device="cpu", dtype="float32") as engine:
        yield engine


@pytest.fixture(scope="module")
def demo():
    from easel.server.demo import DEMO_ID

    with Engine([DEMO_ID], device="cpu", dtype="float32") as engine:
        yield engine


# ----------------------------------------------------------------------------- the choice


@pytest.mark.parametrize("requested, strength, selection, margins, chosen", [
    ("auto", 1.0, None, (0, 0, 0, 0), "refine"),  # no selection: image to image as before
    ("auto", 0.6, Bounds(10, 10, 20, 20), (0, 0, 0, 0), "refine"),  # below full strength: refine
    ("auto", 1.0, Bounds(10, 10, 20, 20), (0, 0, 0, 0), "fill"),
    ("auto", 1.0, Bounds(0, 10, 100, 20), (0, 0, 0, 0), "expand"),  # spans the canvas's width
    ("auto", 1.0, Bounds(10, 0, 20, 80), (0, 0, 0, 0), "expand"),  # spans its height
    ("auto", 0.3, None, (0, 0, 8, 0), "expand"),  # margins: always expand
    ("remove", 0.5, Bounds(10, 10, 20, 20), (0, 0, 0, 0), "remove"),  # as asked
    ("add", 1.0, Bounds(10, 10, 20, 20), (0, 0, 0, 0), "add"),
])
def test_automatic_choice_from_selection_and_strength(requested, strength, selection, margins, chosen):
    assert modes.choose_mode(requested, strength, selection, Extent(100, 80), margins) == chosen


@pytest.mark.parametrize("x, canvas_width, chosen", [(0, 64, "expand"), (40, 200, "fill"), (40, None, "expand")])
def test_a_selection_spanning_the_canvas_not_just_the_sent_region_expands(x, canvas_width, chosen):
    mask = box_mask(64, 48, (0, 10, 64, 20))  # as wide as the sent image
    request = GenerateRequest(job="j", prompt="x", x=x, canvas_width=canvas_width, canvas_height=canvas_width)
    setup = setup_mode(request, texture(64, 48), mask)
    assert setup.mode == chosen and setup.parameters() == {"inpaint_mode": chosen}
    assert setup_mode(replace(request, strength=0.9), texture(64, 48), mask).mode == "refine"


def test_feather_widens_with_strength_for_new_content_only():
    assert modes.feather_factor("refine", 1.0) == 1.0 and modes.feather_factor("refine", 0.3) == 1.0
    assert modes.feather_factor("fill", 1.0) == 1.5 and modes.feather_factor("add", 0.5) == 1.0


@pytest.mark.parametrize("fields, images, message", [
    ({"inpaint_mode": "fill"}, ("image",), "inpaint_mode 'fill' regenerates a selection"),
    ({"expand": [0, 0, 8, 0]}, (), "'expand' needs an 'image'"),
    ({"expand": [0, 0, 8, 0], "inpaint_mode": "refine"}, ("image",), "not 'refine'"),
    ({"expand": [8, 0, 0, 0], "x": 4, "canvas_width": 100, "canvas_height": 40}, ("image",),
     "does not reach the canvas's left edge"),
    ({"expand": [0, 0, 4000, 0]}, ("image",), "'expand' is 4064x40"),
])
def test_mode_errors_name_the_field(fields, images, message):
    attached = {name: rgba_image(texture(64, 40)) for name in images}
    request = GenerateRequest(job="j", prompt="x", **fields)
    with pytest.raises(ProtocolError, match=message):
        check_attachments(request, attached, Limits(max_side=2048))


@pytest.mark.parametrize("value", [[1, 2, 3], [-1, 0, 0, 0], [0, 0, 0, 5000], [0, 0, 0, 1.5]])
def test_expand_values_are_checked(value):
    with pytest.raises(ProtocolError, match=r"'expand' must be four whole numbers") as err:
        GenerateRequest.from_message({"job": "j", "prompt": "x", "expand": value})
    assert err.value.field == "expand"


# ----------------------------------------------------------------------------- pixels


def test_prefill_removes_a_drawn_shape_from_a_plain_background():
    picture, selection = drawn_circle()
    for mode in ("fill", "remove"):
        filled = modes.prefill(picture, selection, mode)
        assert np.abs(filled[..., :3].astype(int) - BACKGROUND).max() <= 3
        assert np.array_equal(filled[selection == 0], picture[selection == 0])
    assert (modes.prefill(picture, selection, "add")[selection > 0][:, :3] == modes.NEUTRAL).all()
    assert (modes.prefill(picture, selection, "expand")[..., 3][selection > 0] == 0).all()


def test_colour_match_changes_only_the_new_part_and_matches_the_band():
    original = texture(96, 80, seed=3)
    selection = box_mask(96, 80, (30, 25, 30, 25))
    generated = np.clip(original[..., :3].astype(int) * 0.6 + 70, 0, 255).astype(np.uint8)  # a colour drift
    matched = modes.colour_match(generated, original, selection, feather=6)
    cmask = composite_mask(selection, 6)
    assert np.array_equal(matched[cmask == 0], generated[cmask == 0])
    band = (cmask > 0) & (selection == 0)
    for c in range(3):
        assert abs(matched[band][:, c].mean() - original[band][:, c].mean()) < 1.0
        assert abs(matched[band][:, c].std() - original[band][:, c].std()) < 1.5
    kept = modes.colour_match(generated, original, selection, feather=6, contrast=False)  # fill, expand
    shift = kept.astype(int) - generated.astype(int)
    inside = cmask > 0
    assert np.array_equal(kept[cmask == 0], generated[cmask == 0])
    for c in range(3):  # one shift per channel (but where it clips): the contrast is the model's
        values, counts = np.unique(shift[inside][:, c], return_counts=True)
        assert counts.max() > 0.95 * inside.sum(), values
        assert abs(kept[band][:, c].mean() - original[band][:, c].mean()) < 1.0


# ----------------------------------------------------------------------------- on the models


def test_refine_is_the_selection_work_as_before(tiny):
    image, mask = texture(96, 80, seed=1), box_mask(96, 80, (30, 20, 30, 30))
    out = generate(tiny, image, mask, inpaint_mode="refine")
    request = GenerateRequest(job="j", prompt="a red circle", steps=2, seed=5, preview=False)
    info = tiny.model_info(None)
    plan = plan_generation(request, image, mask, info.native)
    work_image, work_mask = prepare(plan, image, mask)
    job = engine_job(request, mode=plan.mode, model=info.id, seeds=[5], width=plan.work.width,
                     height=plan.work.height, image=work_image, mask=work_mask)
    (before,) = tiny.run(job, lambda p: None, lambda: False)
    expected = composite(plan, image, mask, before)
    assert np.array_equal(out.layers[0].rgba, expected.rgba) and (out.layers[0].x, out.layers[0].y) == (expected.x, expected.y)
    assert out.parameters["inpaint_mode"] == "refine" and out.parameters["feather"] == plan.feather


@pytest.mark.parametrize("mode", ["fill", "add", "remove", "expand"])
def test_each_mode_on_the_tiny_model_keeps_pixels_outside_the_blend(tiny, mode):
    image, mask = texture(96, 80, seed=2), box_mask(96, 80, (30, 20, 30, 30))
    out = generate(tiny, image, mask, inpaint_mode=mode, strength=0.7)
    p = out.parameters
    assert p["inpaint_mode"] == mode
    assert p["strength"] == (1.0 if mode in ("fill", "expand") else 0.7)
    assert p["prompt"] == ("" if mode == "remove" else "a red circle")
    cmask = composite_mask(mask, p["feather"])
    flat = flatten(image, layer_of(out))
    assert np.array_equal(flat[cmask == 0], image[cmask == 0])
    assert not np.array_equal(flat[mask == 255], image[mask == 255])


@pytest.mark.parametrize("engine_name", ["tiny", "demo"])
def test_remove_leaves_no_trace_on_a_plain_background(request, engine_name):
    engine = request.getfixturevalue(engine_name)
    picture, selection = drawn_circle()
    out = generate(engine, picture, selection, inpaint_mode="remove", steps=8)
    flat = flatten(picture, layer_of(out))
    difference = np.abs(flat[..., :3].astype(int) - BACKGROUND).max(axis=-1)
    assert difference.max() <= 2, f"{engine_name}: a trace {difference.max()} levels off the background"
    assert out.parameters["prompt"] == ""


@pytest.mark.parametrize("mode", ["refine", "fill", "add", "remove", "expand"])
def test_each_mode_on_the_demo_model(demo, mode):
    picture, selection = drawn_circle()
    out = generate(demo, picture, selection, inpaint_mode=mode, steps=8, strength=0.8)
    assert out.parameters["inpaint_mode"] == mode
    flat = flatten(picture, layer_of(out))
    untouched = composite_mask(selection, out.parameters["feather"]) == 0
    assert np.array_equal(flat[untouched], picture[untouched])
    changed = np.abs(flat[..., :3].astype(int) - picture[..., :3]).max(axis=-1)[selection == 255]
    assert changed.max() > 0  # every mode paints the selection


def test_fill_on_a_plain_background_paints_its_prompt_with_the_backgrounds_colour_cast(demo):
    """Auto at strength 1 is a fill: the prompt's subject stays (the plain band's zero spread must not flatten
    it, as it does for remove), and the band's mean is the background's."""
    picture, selection = drawn_circle()
    out = generate(demo, picture, selection, steps=8)
    assert out.parameters["inpaint_mode"] == "fill"
    flat = flatten(picture, layer_of(out))
    inside = np.abs(flat[..., :3].astype(int) - BACKGROUND).max(axis=-1)[selection == 255]
    assert inside.max() > 20  # something was painted
    band = (composite_mask(selection, out.parameters["feather"]) > 0) & (selection == 0)
    assert np.abs(flat[band][:, :3].mean(axis=0) - BACKGROUND).max() < 4


@pytest.mark.parametrize("margins", [(16, 0, 32, 8), (0, 24, 0, 0)])
def test_expand_grows_the_picture_and_keeps_the_old_pixels(tiny, margins):
    left, top, right, bottom = margins
    image = texture(80, 60, seed=4)
    out = generate(tiny, image, None, expand=list(margins), strength=0.5, canvas_width=80, canvas_height=60)
    p, layer = out.parameters, layer_of(out)
    assert p["inpaint_mode"] == "expand" and p["expand"] == list(margins) and p["strength"] == 1.0
    grown = Bounds(-left, -top, 80 + left + right, 60 + top + bottom)
    assert layer.bounds.union(Bounds(0, 0, 80, 60)) == grown  # the layer reaches every new margin
    old = np.pad(image, ((top, bottom), (left, right), (0, 0)))
    flat = flatten(old, layer, (-left, -top))
    assert (flat[..., 3] == 255).all()  # the margins are painted, opaque
    new = np.full(old.shape[:2], 0, np.uint8)
    new[:top, :], new[top + 60:, :], new[:, :left], new[:, left + 80:] = 255, 255, 255, 255
    untouched = composite_mask(new, p["feather"]) == 0
    assert untouched.any() and np.array_equal(flat[untouched], old[untouched])


def test_expand_on_the_demo_model(demo):
    image = np.array(drawn_circle()[0])
    out = generate(demo, image, None, expand=[0, 0, 32, 0], steps=8)
    layer = layer_of(out)
    assert layer.bounds.right == 96 and layer.bounds.bottom == 64
    flat = flatten(np.pad(image, ((0, 0), (0, 32), (0, 0))), layer)
    assert (flat[..., 3] == 255).all()
    assert np.array_equal(flat[:, :20], image[:, :20])  # far from the new margin: as it was


def test_cli_expand_against_a_real_server(served, tmp_path, capsys):
    from easel.cli import main

    source = texture(64, 48, seed=6)
    PILImage.fromarray(source[..., :3]).save(tmp_path / "in.png")
    base = ["generate", "--url", served[0], "--prompt", "sky", "--steps", "2", "--seed", "1", "--quiet",
            "--image", str(tmp_path / "in.png")]
    assert main([*base, "--expand", "16,0,16,8", "--out", str(tmp_path / "out.png")]) == 0
    out = np.asarray(PILImage.open(tmp_path / "out.png"))
    assert out.shape == (56, 96, 3)  # opaque RGB, grown by the margins
    assert np.array_equal(out[0:28, 16 + 20:16 + 44], source[0:28, 20:44, :3])  # old pixels far from the margins
    capsys.readouterr()
    assert main([*base, "--expand", "16,0,16", "--out", str(tmp_path / "bad.png")]) == 2
    assert "LEFT,TOP,RIGHT,BOTTOM" in capsys.readouterr().err
    assert main([*base, "--expand=-4,0,0,0", "--out", str(tmp_path / "bad.png")]) == 2
    assert "(--expand)" in capsys.readouterr().err


@pytest.mark.parametrize("fields", [{"expand": [0, 0, 96, 0]}, {"inpaint_mode": "fill"}])
def test_new_content_through_the_second_pass_keeps_the_old_pixels(tiny, fields):
    image, mask = texture(160, 120, seed=7), box_mask(160, 120, (20, 20, 120, 80))
    out = generate(tiny, image, None if "expand" in fields else mask, hires="on", **fields)
    p, layer = out.parameters, layer_of(out)
    assert "second_pass" in p
    if "expand" in fields:
        old, new = np.pad(image, ((0, 0), (0, 96), (0, 0))), np.zeros((120, 256), np.uint8)
        new[:, 160:] = 255
    else:
        old, new = image, mask
    flat = flatten(old, layer)
    untouched = composite_mask(new, p["feather"]) == 0
    assert untouched.any() and np.array_equal(flat[untouched], old[untouched])
    assert (flat[..., 3] == 255).all()
