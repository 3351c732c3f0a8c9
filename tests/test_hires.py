"""The second pass ("hires") and exact size: planning, then the real tiny model through ``run_generation``.

Server, client, cancel and CLI paths are in tests/test_hires_server.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from easel.client.protocol import GenerateRequest, ProtocolError
from easel.server.engine import Engine
from easel.server.engine.types import ModelInfo, Progress
from easel.server.families import Family
from easel.server.generation import run_generation
from easel.server.hires import TILED_STRENGTH, hires_strength
from easel.server.imaging.compose import LayerResult, flatten
from easel.server.imaging.geometry import Extent
from easel.server.imaging.metrics import detail
from easel.server.imaging.region import plan_txt2img, plan_work, work_size
from easel.server.imaging.tiles import plan_refine
from easel.server.results import parameters_text
from easel.server.work import Inputs, StepBar
from helpers.pictures import box_mask, texture

torch.set_num_threads(1)  # 2 shared cores: one thread is several times faster than two under load


# ----------------------------------------------------------------------------- planning

@pytest.mark.parametrize("region, exact, work", [
    ((256, 256), False, (512, 512)),  # small: scaled up to the native area
    ((256, 256), True, (256, 256)),  # exact: as asked
    ((1001, 777), True, (1000, 776)),  # exact: the nearest multiples of 8
    ((4096, 4096), True, (4096, 4096)),  # exact is uncapped
    ((2048, 2048), False, (512, 512)),
])
def test_work_size_native_area_or_exact(region, exact, work):
    assert work_size(Extent(*region), Extent(512, 512), exact=exact) == Extent(*work)


@pytest.mark.parametrize("size, second", [
    ((512, 512), False), ((700, 700), False),  # 1:1, or 1.37x a side: one pass is enough
    ((800, 800), True), ((2048, 2048), True), ((2048, 640), True), ((256, 256), False)])
def test_second_pass_when_the_region_is_well_above_the_work_size(size, second):
    plan = plan_txt2img(size, (512, 512))
    assert plan.wants_second_pass is second
    assert not plan_txt2img(size, (512, 512), exact=True).wants_second_pass  # exact runs 1:1


def test_selection_on_a_big_canvas_gets_a_second_pass_only_when_its_region_is_big():
    small = plan_work((4096, 4096), box_mask(4096, 4096, (1000, 1000, 300, 300)), (512, 512))
    big = plan_work((4096, 4096), box_mask(4096, 4096, (1000, 1000, 1500, 1200)), (512, 512))
    assert not small.wants_second_pass and big.wants_second_pass and big.upscale > 3


@pytest.mark.parametrize("size, native, tile, count", [
    ((1024, 1024), (512, 512), (1024, 1024), 1),  # up to 2x a side: one piece
    ((1001, 777), (512, 512), (1008, 784), 1),  # rounded up to multiples of 8 by edge padding
    ((1100, 1100), (512, 512), (512, 512), 9),  # bigger: native tiles
    ((2048, 2048), (512, 512), (512, 512), 25),
    ((1200, 400), (512, 512), (512, 400), 3),  # one side over 2x native: tiles
    ((2048, 2048), (64, 64), (64, 64), 43 * 43),
])
def test_refine_plan_one_piece_or_native_tiles(size, native, tile, count):
    plan = plan_refine(size, native)
    assert plan.tile == Extent(*tile) and plan.count == count and plan.size == Extent(*size)


def test_family_default_strength_and_the_request_override():
    sdxl = ModelInfo("x", "sdxl", (1024, 1024), 25, 6.0, "hub")
    assert sdxl.family is Family.SDXL  # a plain "sdxl" becomes the type
    assert hires_strength(GenerateRequest(job="j", prompt="p"), sdxl) == Family.SDXL.hires_strength == 0.4
    assert hires_strength(GenerateRequest(job="j", prompt="p"), sdxl, tiled=True) == TILED_STRENGTH == 0.35
    assert hires_strength(GenerateRequest(job="j", prompt="p", hires_strength=0.6), sdxl, tiled=True) == 0.6


@pytest.mark.parametrize("field, value", [("hires", "sometimes"), ("hires_strength", 1.5), ("exact_size", "yes")])
def test_bad_fields_are_named(field, value):
    with pytest.raises(ProtocolError) as err:
        GenerateRequest.from_message({"type": "generate", "job": "j", "prompt": "p", field: value})
    assert err.value.field == field


def test_defaults_stay_off_the_wire():
    message = GenerateRequest(job="j", prompt="p").to_message()
    assert not {"hires", "hires_strength", "exact_size"} & set(message)
    message = GenerateRequest(job="j", prompt="p", hires="off", hires_strength=0.3, exact_size=True).to_message()
    assert (message["hires"], message["hires_strength"], message["exact_size"]) == ("off", 0.3, True)


def test_step_bar_counts_on_across_runs_and_corrects_a_wrong_guess():
    seen: list[Progress] = []
    bar = StepBar(seen.append, total=5)
    run = bar.begin(2)
    run(Progress("denoise", 1, 2))
    run(Progress("denoise", 2, 2))
    run = bar.begin(3, "second pass")
    run(Progress("load", 0, 1, "loading"))  # passes through
    run(Progress("denoise", 1, 4))  # the engine says 4, not 3: the total follows
    assert [(p.step, p.total) for p in seen if p.stage == "denoise"] == [(1, 5), (2, 5), (3, 6)]
    assert seen[-1].message == "second pass" and seen[2].stage == "load"


def test_parameters_text_reports_the_second_pass_the_a1111_way():
    params = {"prompt": "a cat", "steps": 20, "scheduler": "euler", "guidance": 7.0, "model": "m", "strength": 1.0,
              "mode": "txt2img", "work_size": [512, 512],
              "second_pass": {"upscale": 4.0, "size": [2048, 2048], "strength": 0.5}}
    text = parameters_text(params, 3, 2048, 2048)
    assert "Size: 512x512" in text and "Denoising strength: 0.5" in text
    assert "Hires upscale: 4.0, Hires resize: 2048x2048" in text and "Hires strength" not in text
    sketch = parameters_text({**params, "mode": "img2img", "strength": 0.6}, 3, 2048, 2048)
    assert "Denoising strength: 0.6" in sketch and "Hires strength: 0.5" in sketch
    plain = parameters_text({**params, "second_pass": None, "work_size": [256, 256]}, 3, 256, 256)
    assert "Size: 256x256" in plain and "Hires" not in plain


# ----------------------------------------------------------------------------- the real tiny model

@pytest.fixture(scope="module")
def engine(tiny_sd_path):
    return Engine([str(tiny_sd_path)], device="cpu", dtype="float32")


def generate(engine, inputs: Inputs | None = None, **kw):
    """``run_generation`` on the tiny model (native 64 px); returns (output, denoise progress reports)."""
    kw.setdefault("prompt", "a red circle")
    kw.setdefault("steps", 4)
    kw.setdefault("seed", 5)
    events: list[Progress] = []
    request = GenerateRequest(job="j", **kw)
    out = run_generation(engine, request, inputs or Inputs("txt2img"), engine.model_info(None), events.append,
                         lambda: False)
    return out, [e for e in events if e.stage == "denoise"]


def assert_one_bar(events: list[Progress]) -> None:
    """Every step once, in order, under one total that never changes."""
    total = events[-1].total
    assert all(e.total == total for e in events)
    assert [e.step for e in events if e.step] == list(range(1, total + 1))


def test_txt2img_two_passes_under_one_bar_with_previews(engine):
    out, events = generate(engine, width=160, height=160, steps=8)
    layer = out.layers[0]
    assert layer.rgba.shape == (160, 160, 4) and (layer.x, layer.y) == (0, 0)
    second = out.parameters["second_pass"]
    assert out.parameters["work_size"] == [64, 64] and second["size"] == [160, 160] and second["upscale"] == 2.5
    assert second["tiles"] == 9 and second["tile"] == [64, 64] and second["strength"] == TILED_STRENGTH
    assert_one_bar(events)
    assert events[-1].total == 8 + 9 * 2  # first pass 8 steps, then 9 tiles x int(8 x 0.35)
    later = [e for e in events if e.message.startswith("second pass")]
    assert {e.message for e in later} == {f"second pass, tile {k}/9" for k in range(1, 10)}
    assert all(e.preview is not None for e in later)


def test_one_piece_second_pass_and_hires_off(engine):
    out, events = generate(engine, width=120, height=96)
    second = out.parameters["second_pass"]
    assert second["tiles"] == 1 and second["tile"] == [120, 96] and second["strength"] == Family.SD1.hires_strength
    assert events[-1].total == 4 + 2  # one piece: int(4 x 0.5)
    assert {e.message for e in events} == {"", "second pass"}
    off, events = generate(engine, width=120, height=96, hires="off")
    assert "second_pass" not in off.parameters and off.parameters["hires"] == "off"
    assert events[-1].total == 4 and off.layers[0].rgba.shape == (96, 120, 4)


def test_the_second_pass_adds_detail(engine):
    """Mean |Laplacian| of the layer: the plain upscale of a 64 px first pass is smooth."""
    two, _ = generate(engine, width=192, height=192)
    one, _ = generate(engine, width=192, height=192, hires="off")
    assert detail(two.layers[0].rgba) > 2 * detail(one.layers[0].rgba)


def test_exact_size_runs_as_asked(engine):
    out, events = generate(engine, width=160, height=120, exact_size=True)
    assert out.parameters["work_size"] == [160, 120] and "second_pass" not in out.parameters
    assert out.parameters["exact_size"] is True and out.layers[0].rgba.shape == (120, 160, 4)
    assert events[-1].total == 4
    small, _ = generate(engine, width=32, height=32, exact_size=True)
    assert small.parameters["work_size"] == [32, 32]
    native, _ = generate(engine, width=32, height=32)
    assert native.parameters["work_size"] == [64, 64]  # the default for small requests: the native area


def test_batch_images_refine_their_own_first_pass(engine):
    batch, events = generate(engine, width=128, height=128, seed=9, batch=2)
    assert_one_bar(events)
    single, _ = generate(engine, width=128, height=128, seed=10)
    a, b = batch.layers[1].rgba.astype(int), single.layers[0].rgba.astype(int)
    assert batch.layers[1].seed == 10 and np.abs(a - b).max() <= 2
    assert not np.array_equal(batch.layers[0].rgba, batch.layers[1].rgba)


def test_sketch_gets_a_second_pass(engine):
    picture = texture(200, 150)
    out, events = generate(engine, Inputs("img2img", picture), strength=0.6)
    assert out.parameters["mode"] == "img2img" and out.parameters["second_pass"]["size"] == [200, 150]
    assert out.layers[0].rgba.shape == (150, 200, 4) and (out.layers[0].rgba[..., 3] == 255).all()
    assert_one_bar(events)


def test_selection_second_pass_keeps_everything_outside_the_blend_bit_exact(engine):
    """Two small selected squares in far corners: the region is the whole 256² canvas, refined in
    25 tiles of which only those the denoise mask touches run."""
    picture = texture(256, 256, seed=3)
    mask = box_mask(256, 256, (8, 8, 40, 40)) | box_mask(256, 256, (200, 190, 40, 40))
    out, events = generate(engine, Inputs("inpaint", picture, mask), feather=6)
    second = out.parameters["second_pass"]
    assert second["grid"] == [5, 5] and 0 < second["tiles"] < 25
    assert_one_bar(events)
    assert events[-1].total == 4 + second["tiles"] * 1  # 4 first-pass steps, then int(4 x 0.35) per tile
    layer = out.layers[0]
    result = flatten(picture, LayerResult(layer.rgba, layer.x, layer.y))
    alpha = np.zeros((256, 256), np.uint8)
    alpha[layer.y:layer.y + layer.rgba.shape[0], layer.x:layer.x + layer.rgba.shape[1]] = layer.rgba[..., 3]
    assert np.array_equal(result[alpha == 0], picture[alpha == 0])
    assert (alpha[mask == 255] == 255).all() and not np.array_equal(result[mask == 255], picture[mask == 255])


def test_bench_section_runs_small():
    """bench/hires.py's rows on the tiny model at 128² (the bench runs 2048²): the detail check holds."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.__main__ import SECTIONS
    from bench.hires import detail_rows, tests_tiny_sd

    rows = detail_rows(tests_tiny_sd(), 128)
    assert "hires" in SECTIONS and len(rows) == 6
    assert rows[-1].ok, rows[-1]


@pytest.mark.parametrize("flag_all", [True, False])
def test_safety_checker_verdict_covers_both_passes(tiny_sd_path, tmp_path, flag_all):
    """With a checker, a flagged first pass or tile blacks out the whole image; nothing flagged, nothing black."""
    from helpers.tiny_models import build_tiny_safety_checker

    checker = build_tiny_safety_checker(tmp_path / "checker", flag_all=flag_all)
    with Engine([str(tiny_sd_path)], device="cpu", dtype="float32", safety_checker=checker) as checked:
        out, _ = generate(checked, width=128, height=128, batch=2)
    assert out.parameters["nsfw"] == [flag_all, flag_all] and out.parameters["second_pass"]["tiles"] == 1
    for layer in out.layers:
        assert bool((layer.rgba[..., :3] == 0).all()) == flag_all
