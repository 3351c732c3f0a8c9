"""Tiled upscale: pure tile planning and blending, then end to end through the real server and client."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from easel.client.connection import Client, new_job_id
from easel.client.protocol import GenerateRequest, Image, encode_image
from easel.server.engine import Engine
from easel.server.imaging.geometry import Extent
from easel.server.imaging.tiles import WEIGHT, axis_tiles, axis_weights, blend, plan_tiles
from easel.server.upscale import DEFAULT_STRENGTH
from helpers.pictures import pixels, rgba_image
from helpers.server_harness import inprocess_server

torch.set_num_threads(1)  # 2 shared cores: one thread is several times faster than two under load

SIZES = [(200, 160), (201, 157), (64, 64), (65, 64), (30, 20), (25, 13), (64, 200), (1000, 700), (113, 113)]


# ----------------------------------------------------------------------------- pure planning and blending

def coverage(plan) -> np.ndarray:
    """How many tiles cover each pixel of the padded image."""
    count = np.zeros((plan.padded.height, plan.padded.width), int)
    for b in plan.tiles:
        count[b.slices] += 1
    return count


@pytest.mark.parametrize("size", SIZES)
def test_tiles_cover_the_image_with_overlap(size):
    plan = plan_tiles(size, (64, 64), overlap=16)
    assert plan.tile.is_multiple_of(8) and plan.tile.fits_in(Extent(64, 64))
    assert (coverage(plan) >= 1).all()
    assert all(b.right <= plan.padded.width and b.bottom <= plan.padded.height for b in plan.tiles)
    for starts, side, length in ((plan.xs, plan.tile.width, size[0]), (plan.ys, plan.tile.height, size[1])):
        assert starts[0] == 0 and starts[-1] + side == max(length, side)
        overlaps = [a + side - b for a, b in zip(starts, starts[1:])]
        assert all(o >= 16 for o in overlaps), overlaps
        assert max(length, side) - length < 8  # padding only rounds a short side up to a multiple of 8


def test_image_smaller_than_a_tile_is_one_padded_tile():
    plan = plan_tiles((25, 13), (64, 64))
    assert plan.count == 1 and plan.tile == Extent(32, 16) and plan.padded == Extent(32, 16)
    img = np.random.default_rng(0).integers(0, 256, (13, 25, 3), dtype=np.uint8)
    (crop,) = plan.crops(img)
    assert crop.shape == (16, 32, 3) and np.array_equal(crop[:13, :25], img)
    assert (crop[13:, :25] == img[-1:]).all()  # edge repeated
    assert np.array_equal(blend(plan, [crop]), img)


def test_native_size_is_used_and_default_overlap_scales():
    plan = plan_tiles((2048, 1536), (512, 512))
    assert plan.tile == Extent(512, 512) and plan.overlap == 64 and plan.count == 5 * 4
    assert plan_tiles((3000, 3000), (1024, 1024)).overlap == 128


@pytest.mark.parametrize("size", SIZES)
def test_weights_sum_to_one_exactly(size):
    plan = plan_tiles(size, (64, 64))
    total = np.zeros((plan.padded.height, plan.padded.width), np.int64)
    for i, b in enumerate(plan.tiles):
        w = plan.weight(i)
        assert w.min() >= 0
        total[b.slices] += w
    assert (total == WEIGHT * WEIGHT).all()
    single = coverage(plan) == 1
    for i, b in enumerate(plan.tiles):  # one tile alone: its pixel, bit-exact
        assert (plan.weight(i)[single[b.slices]] == WEIGHT * WEIGHT).all()


@settings(max_examples=200, deadline=None)
@given(length=st.integers(1, 2000), tile=st.integers(1, 80).map(lambda n: 8 * n), overlap=st.integers(0, 400))
def test_axis_weights_partition_any_length(length, tile, overlap):
    side, starts = axis_tiles(length, tile, overlap)
    w = axis_weights(length, side, starts)
    total = np.zeros(max(length, side), np.int64)
    for s, row in zip(starts, w):
        total[s:s + side] += row
    assert (total == WEIGHT).all() and w.min() >= 0


def test_overlap_is_a_linear_crossfade():
    side, starts = axis_tiles(200, 64, 16)
    w = axis_weights(200, side, starts)
    ov = starts[0] + side - starts[1]
    out, into = w[0][-ov:], w[1][:ov]
    assert (np.diff(out) < 0).all() and (np.diff(into) > 0).all()
    expected = WEIGHT * (np.arange(ov) + 0.5) / ov
    assert np.abs(into - expected).max() <= 1


@pytest.mark.parametrize("size", SIZES)
def test_blending_constant_tiles_gives_the_constant(size):
    plan = plan_tiles(size, (64, 64))
    tiles = [np.full((*plan.tile.as_tuple()[::-1], 3), (7, 128, 255), np.uint8) for _ in range(plan.count)]
    out = blend(plan, tiles)
    assert out.shape == (size[1], size[0], 3) and (out == (7, 128, 255)).all()


@pytest.mark.parametrize("size", SIZES)
def test_blending_crops_gives_the_image_back(size):
    img = np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    plan = plan_tiles(size, (64, 64))
    assert np.array_equal(blend(plan, plan.crops(img)), img)


# ----------------------------------------------------------------------------- through the real server

@pytest.fixture(scope="module")
def served(tiny_sd_path):
    engine = Engine([str(tiny_sd_path)], device="cpu", dtype="float32")
    with inprocess_server(engine) as (url, app):
        yield url, app


@pytest.fixture
def client(served):
    with Client(served[0], image_format="rgba") as c:
        yield c


def smooth(width: int, height: int) -> np.ndarray:
    """A smooth opaque colour gradient."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    rgb = np.dstack([40 + 150 * xx / width, 60 + 120 * yy / height, 120 + 60 * (xx + yy) / (width + height)])
    return np.dstack([rgb.round().astype(np.uint8), np.full((height, width), 255, np.uint8)])


def up(**kw) -> GenerateRequest:
    kw.setdefault("prompt", "a landscape")
    kw.setdefault("steps", 4)
    kw.setdefault("seed", 5)
    kw.setdefault("upscale", 2)
    return GenerateRequest(job=new_job_id(), **kw)


def test_upscale_size_offset_and_progress_over_every_tile(client):
    events = []
    r = client.generate(up(strength=0.5, x=3, y=4), rgba_image(smooth(100, 80)), on_progress=events.append)
    layer = r.images[0]
    assert (layer.image.width, layer.image.height) == (200, 160) and (layer.x, layer.y) == (6, 8)
    p = r.parameters
    assert p["mode"] == "upscale" and p["upscale"] == 2 and p["tile"] == [64, 64] and p["tiles"] == 12
    assert p["strength"] == 0.5 and p["seeds"] == [5] and layer.seed == 5
    ups = [e for e in events if e.stage == "upscale"]
    per_tile = ups[0].total // 12
    assert per_tile == 2 and all(e.total == 12 * per_tile for e in ups)
    assert [e.step for e in ups] == list(range(1, 12 * per_tile + 1))  # monotonic, every step of every tile
    assert {e.message for e in ups} == {f"tile {k}/12" for k in range(1, 13)}
    assert all(e.preview is not None for e in ups)
    assert (pixels(layer.image)[..., 3] == 255).all()


def test_default_strength_and_batch_seeds(client):
    r = client.generate(up(seed=9, batch=2, steps=3), rgba_image(smooth(40, 30)))
    assert r.parameters["strength"] == DEFAULT_STRENGTH
    assert [i.seed for i in r.images] == [9, 10]
    single = client.generate(up(seed=10, steps=3), rgba_image(smooth(40, 30)))
    diff = np.abs(pixels(r.images[1].image).astype(int) - pixels(single.images[0].image).astype(int))
    assert diff.max() <= 1
    assert not np.array_equal(pixels(r.images[0].image), pixels(r.images[1].image))


@pytest.mark.parametrize("factor", [2, 4])
def test_strength_zero_is_the_plain_lanczos_upscale(client, factor):
    src = np.random.default_rng(2).integers(0, 256, (23, 31, 4), dtype=np.uint8)
    src[..., 3] = 255
    r = client.generate(up(strength=0.0, upscale=factor), rgba_image(src))
    want = PILImage.fromarray(src[..., :3]).resize((31 * factor, 23 * factor), PILImage.Resampling.LANCZOS)
    got = pixels(r.images[0].image)
    assert np.array_equal(got[..., :3], np.asarray(want)) and (got[..., 3] == 255).all()


def test_transparency_is_kept(client):
    src = smooth(40, 24)
    src[:, :20, 3] = 0  # the left half is transparent
    r = client.generate(up(strength=0.0), rgba_image(src))
    assert np.array_equal(pixels(r.images[0].image), np.asarray(PILImage.fromarray(src).resize(
        (80, 48), PILImage.Resampling.LANCZOS)))
    r = client.generate(up(strength=0.4), rgba_image(src))
    got = pixels(r.images[0].image)
    assert (got[:, :32, 3] == 0).all() and (got[:, 48:, 3] == 255).all()


def test_image_smaller_than_a_tile(client):
    r = client.generate(up(strength=0.5), rgba_image(smooth(25, 13)))
    assert (r.images[0].image.width, r.images[0].image.height) == (50, 26) and r.parameters["tiles"] == 1


def border_ratio(image: np.ndarray, plan) -> float:
    """Mean |luma step| across the lines where tiles start or end over the mean step everywhere else."""
    luma = image[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    gx, gy = np.abs(np.diff(luma, axis=1)), np.abs(np.diff(luma, axis=0))  # gx[:, x - 1]: from x - 1 to x
    lines_x = {x for x in plan.xs[1:]} | {x + plan.tile.width for x in plan.xs[:-1]}
    lines_y = {y for y in plan.ys[1:]} | {y + plan.tile.height for y in plan.ys[:-1]}
    at_x, at_y = np.zeros(gx.shape[1], bool), np.zeros(gy.shape[0], bool)
    at_x[[x - 1 for x in lines_x]], at_y[[y - 1 for y in lines_y]] = True, True
    across = np.concatenate([gx[:, at_x].ravel(), gy[at_y].ravel()])
    rest = np.concatenate([gx[:, ~at_x].ravel(), gy[~at_y].ravel()])
    return float(across.mean() / rest.mean())


def test_seams_do_not_stand_out(client):
    """The real tiny model on a smooth input: tile borders are no busier than the rest."""
    r = client.generate(up(strength=0.3, steps=10), rgba_image(smooth(100, 80)))
    ratio = border_ratio(pixels(r.images[0].image), plan_tiles((200, 160), (64, 64)))
    assert ratio < 1.3, f"tile borders have {ratio:.2f}x the gradient of the rest"


class ShiftingEngine:
    """A seam-prone stand-in for a model: every tile comes back with its own brightness shift.

    Real models disagree between tiles like this (colour drift); the tiny random model does not
    (even hard-pasted its tiles show no border), so this makes seams measurable.
    """

    def __init__(self) -> None:
        self.tiles: list[np.ndarray] = []

    def run(self, job, progress, cancelled):
        from easel.server.engine.types import Progress

        shift = (len(self.tiles) * 37) % 25 - 12
        out = np.clip(np.asarray(job.image).astype(int) + shift, 0, 255).astype(np.uint8)
        self.tiles.append(out)
        progress(Progress("denoise", 1, 1))
        return [PILImage.fromarray(out) for _ in job.seeds]


def test_blending_removes_tile_disagreement_seams():
    from easel.server.engine.types import ModelInfo
    from easel.server.upscale import run_upscale
    from easel.server.work import Inputs

    engine = ShiftingEngine()
    model = ModelInfo("fake", "sd1", (64, 64), 4, 7.5, "builtin")
    out = run_upscale(engine, up(strength=0.5), Inputs("img2img", smooth(100, 80)), model, lambda p: None,
                      lambda: False)
    plan = plan_tiles((200, 160), (64, 64))
    hard = np.zeros((160, 200, 3), np.uint8)
    for bounds, tile in zip(plan.tiles, engine.tiles):
        hard[bounds.slices] = tile
    assert border_ratio(hard, plan) > 4, "the metric must see seams where tiles are pasted without blending"
    assert border_ratio(out.layers[0].rgba, plan) < 1.5


def test_cancel_mid_upscale(client):
    job = client.submit(up(steps=20, strength=0.9), rgba_image(smooth(120, 120)))
    at_cancel = last = None
    for event in client.events(timeout=60):
        if event.type == "progress" and event.data["stage"] == "upscale":
            last = event.data["step"]
            if at_cancel is None and event.data["message"].startswith("tile 2/"):
                at_cancel = last
                client.cancel(job)
        if event.type in ("cancelled", "result", "error"):
            break
    assert event.type == "cancelled" and event.job == job
    assert at_cancel is not None and last - at_cancel <= 1


@pytest.mark.parametrize("patch, attach, field", [
    ({}, (), "image"),  # nothing to upscale
    ({}, ("image", "mask"), "mask"),
    ({}, ("huge",), "upscale"),  # 5000 px x2 is over the 8192 px side limit
    ({"upscale": 3}, ("image",), "upscale"),
])
def test_bad_upscale_requests_name_the_field(client, patch, attach, field):
    images = {"image": rgba_image(smooth(16, 16)), "mask": Image.gray(16, 16, bytes(256)),
              "huge": rgba_image(np.zeros((2, 5000, 4), np.uint8))}
    names = ["image" if a == "huge" else a for a in attach]
    frames = [json.dumps({**up().to_message(), **patch, "attachments": names})]
    frames += [encode_image(images[a]) for a in attach]
    for f in frames:
        client._ws.send(f)
    event = next(e for e in client.events(timeout=30) if e.type in ("error", "result"))
    assert event.type == "error" and event.data["field"] == field, event.data


def test_cli_upscale(served, tmp_path):
    from easel.cli import main

    PILImage.fromarray(smooth(40, 30)[..., :3]).save(tmp_path / "in.png")
    code = main(["generate", "--url", served[0], "--steps", "2", "--upscale", "2", "--image", str(tmp_path / "in.png"),
                 "--out", str(tmp_path / "big.png"), "--quiet"])  # no --prompt needed for an upscale
    assert code == 0 and PILImage.open(tmp_path / "big.png").size == (80, 60)
    assert main(["generate", "--url", served[0], "--out", str(tmp_path / "x.png")]) == 2  # others need one
