"""Upscaler models (ESRGAN & co.) through spandrel for the tiled upscale: tiny random Real-ESRGAN Compact and
ESRGAN files in A1111, ComfyUI and flat folders; the tiled run against one pass; sizes, strength 0, progress,
the welcome, errors; a real server, client and ``easel generate`` (spandrel without torchvision here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from easel.client import editing
from easel.client.connection import Client, new_job_id
from easel.client.editing.power import LANCZOS_LABEL
from easel.client.protocol import GenerateRequest
from easel.server.engine import Engine
from easel.server.engine.types import EngineError, JobCancelled
from easel.server.library.scan import Library
from easel.server.upscalers import Upscalers, load, passes, scale_from_name, tiled
from helpers.cli_runs import easel, textured
from helpers.pictures import pixels, rgba_image
from helpers.server_harness import inprocess_server
from helpers.upscalers import compact, esrgan, save

torch.set_num_threads(1)


def one_pass(model, rgb: np.ndarray, scale: int) -> np.ndarray:
    return tiled.run_tiled(model, rgb, scale, "cpu", torch.float32, lambda k, n: None, lambda: False, tile=10**6)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    """One models folder of each layout, each with its upscalers."""
    root = tmp_path_factory.mktemp("upscalers")
    (root / "a1111" / "models" / "Stable-diffusion").mkdir(parents=True)  # makes it an A1111 layout
    save(compact(4), root / "a1111" / "models" / "ESRGAN" / "4x_compact.pth", wrap="params_ema")
    save(esrgan(2), root / "a1111" / "models" / "RealESRGAN" / "esrgan_x2.safetensors")
    save(compact(2, seed=1), root / "comfy" / "models" / "upscale_models" / "two.safetensors")
    (root / "comfy" / "models" / "checkpoints").mkdir()
    save(compact(1), root / "flat" / "restore.safetensors")  # found by its keys
    save(compact(4, seed=2), root / "flat" / "upscale_models" / "4xflat.pth")
    return root


def test_library_finds_upscalers_in_every_layout(folders):
    found = {(Path(e.root).name, e.id): e for e in Library([folders / n for n in ("a1111", "comfy", "flat")]).scan()}
    assert {k for k, e in found.items() if e.kind == "upscaler" and e.problem is None} == {
        ("a1111", "4x_compact"), ("a1111", "esrgan_x2"), ("comfy", "two"), ("flat", "restore"), ("flat", "4xflat")}
    ups = Upscalers(Library([folders / "a1111", folders / "comfy"]))
    assert ups.infos() == [{"id": "4x_compact", "name": "4x compact", "scale": 4},
                           {"id": "esrgan_x2", "name": "esrgan x2", "scale": 2}, {"id": "two", "name": "two", "scale": None}]
    rgb = textured(12, 10)
    assert ups.upscale("two", rgb, 2, lambda k, n: None, lambda: False).shape == (20, 24, 3)
    assert ups.infos()[2]["scale"] == 2  # known once loaded


def test_scale_from_names_and_passes():
    names = {"4x_NMKD-Siax_200k.pth": 4, "4xNomos8kSC.safetensors": 4, "RealESRGAN_x4plus.pth": 4,
             "realesr-general-x4v3.pth": 4, "2x-AnimeSharpV2.pth": 2, "Swin2SR_X2_64.pth": 2, "ultrasharp.pth": None,
             "model_x16.pth": None}
    assert {n: scale_from_name(n) for n in names} == names
    assert [passes(s, f) for s, f in ((4, 2), (4, 4), (2, 4), (2, 2), (1, 4), (3, 4), (8, 4))] == [1, 1, 2, 1, 1, 1, 1]


def test_spandrel_loads_here_without_torchvision():
    """spandrel's package import needs torchvision; the registry is built from the architectures that import."""
    reg = load.registry()
    ids = {str(a.architecture.id) for a in reg.archs}
    assert {"ESRGAN", "Compact", "SwinIR", "HAT", "DAT"} <= ids
    try:
        import torchvision  # noqa: F401
    except Exception:  # not installed, or built for another torch
        assert set(reg.skipped) == {"LaMa", "RestoreFormer"} and not ids & {"LaMa", "RestoreFormer"}
    assert [m for m, _ in load.main_registry_order()][:2] == ["Compact", "SwiftSRGAN"]  # spandrel's detection order


@pytest.mark.parametrize("make, overlap, tolerance", [(compact, 8, 0), (esrgan, 8, 2)])
def test_tiled_upscale_equals_one_pass(tmp_path, make, overlap, tolerance):
    """Compact sees 4 px: with 8 px of overlap every tile's core is computed exactly as in one pass. ESRGAN sees
    further: near the cores' edges only a little differs."""
    model = load.load(str(save(make(4), tmp_path / "m.safetensors")), "m")
    rgb = np.random.default_rng(3).integers(0, 256, (45, 70, 3), dtype=np.uint8)
    reports = []
    got = tiled.run_tiled(model, rgb, 4, "cpu", torch.float32, lambda k, n: reports.append((k, n)), lambda: False,
                          tile=32, overlap=overlap)
    want = one_pass(model, rgb, 4)
    assert got.shape == want.shape == (180, 280, 3)
    assert np.abs(got.astype(int) - want).max() <= tolerance
    count = tiled.tile_count(70, 45, 32, overlap)
    assert count == 5 * 3 and reports == [(k, count) for k in range(1, count + 1)]
    assert not np.array_equal(want, np.asarray(PILImage.fromarray(rgb).resize((280, 180), PILImage.Resampling.NEAREST)))


def test_cancel_between_tiles(tmp_path):
    model = load.load(str(save(compact(2), tmp_path / "m.pth")), "m")
    seen = []
    with pytest.raises(JobCancelled):
        tiled.run_tiled(model, textured(60, 60), 2, "cpu", torch.float32, lambda k, n: seen.append(k),
                        lambda: len(seen) >= 2, tile=24, overlap=4)
    assert seen == [1, 2]


def test_files_spandrel_cannot_use_say_why(tmp_path):
    lama = {"model.model.1.bn_l.running_mean": torch.zeros(4), "model.model.1.bn_l.running_var": torch.ones(4)}
    from safetensors.torch import save_file

    save_file(lama, str(tmp_path / "big-lama.safetensors"))
    with pytest.raises(EngineError) as err:
        load.load(str(tmp_path / "big-lama.safetensors"), "big-lama")
    assert err.value.field == "upscaler" and "'big-lama'" in str(err.value) and "not a model spandrel recognises" in str(err.value)
    if load.registry().skipped:
        assert "LaMa and RestoreFormer models" in str(err.value) and "need torchvision" in str(err.value)
    (tmp_path / "cut.pth").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(EngineError, match="cannot be read .* copy or download it again"):
        load.load(str(tmp_path / "cut.pth"), "cut")


# ----------------------------------------------------------------------------- through the real server

@pytest.fixture(scope="module")
def served(tiny_sd_path, folders):
    engine = Engine([str(tiny_sd_path)], device="cpu", dtype="float32", models_dir=str(folders / "a1111"))
    with inprocess_server(engine) as (url, app):
        yield url, app


def request(**kw) -> GenerateRequest:
    return GenerateRequest(job=new_job_id(), **{"prompt": "", "steps": 2, "seed": 1, "upscale": 2, **kw})


def test_server_upscaler_sizes_progress_and_strength_zero(served, folders):
    src = np.dstack([textured(20, 14), np.full((14, 20), 255, np.uint8)])
    with Client(served[0], image_format="rgba") as client:
        assert [u["id"] for u in client.welcome["upscalers"]] == ["4x_compact", "esrgan_x2"]
        events = []
        r = client.generate(request(upscaler="4x_compact", strength=0.0, upscale=2), rgba_image(src),
                            on_progress=events.append)
        got = pixels(r.images[0].image)
        model = load.load(str(folders / "a1111" / "models" / "ESRGAN" / "4x_compact.pth"), "x")
        want = np.asarray(PILImage.fromarray(one_pass(model, src[..., :3], 4)).resize((40, 28),
                                                                                  PILImage.Resampling.LANCZOS))
        assert got.shape == (28, 40, 4) and np.array_equal(got[..., :3], want) and (got[..., 3] == 255).all()
        assert r.parameters["upscaler"] == "4x_compact"
        assert [e.message for e in events if e.stage == "upscale"] == ["upscaler tile 1/1"]
        refined = client.generate(request(upscaler="esrgan_x2", strength=0.5, upscale=4), rgba_image(src),
                                  on_progress=events.append)
        assert (refined.images[0].image.width, refined.images[0].image.height) == (80, 56)
        assert any(e.message.startswith("tile ") for e in events)  # the diffusion refine ran after the upscaler


@pytest.mark.parametrize("patch, words", [
    ({"upscaler": "nope"}, "'upscaler' 'nope' is not an upscaler this server offers; use one of 4x_compact, esrgan_x2"),
    ({"upscaler": "4x_compact", "upscale": None}, "'upscaler' makes the tiled upscale; send 'upscale' (2 or 4)"),
])
def test_bad_upscaler_names_the_field_and_choices(served, patch, words):
    with Client(served[0], image_format="rgba") as client:
        message = {**request().to_message(), **patch, "attachments": ["image"]}
        client._ws.send(json.dumps({k: v for k, v in message.items() if v is not None}))
        client._ws.send(__import__("easel.client.protocol", fromlist=["encode_image"]).encode_image(
            rgba_image(np.full((8, 8, 4), 255, np.uint8))))
        event = next(e for e in client.events(timeout=30) if e.type in ("error", "result"))
    assert event.type == "error" and event.data["field"] == "upscaler" and words in event.data["message"]


def test_plugins_choose_the_upscaler_from_the_welcome(served):
    """What both plugins do (Krita's More ▸ list, GIMP's Upscale… drop-down): the choices from the welcome,
    the request from the chosen one, and the server's answer."""
    with Client(served[0], image_format="rgba") as client:
        choices = editing.upscaler_choices(client.welcome)
        assert choices == [(LANCZOS_LABEL, ""), ("4x_compact (×4)", "4x_compact"), ("esrgan_x2 (×2)", "esrgan_x2")]
        assert editing.feature_choices(client.welcome)["upscalers"] == ["4x_compact", "esrgan_x2"]
        src = np.dstack([textured(10, 8), np.full((8, 10), 255, np.uint8)])
        params = editing.Params("", strength=0.0, steps=2, seed=1)
        planned = editing.plan_upscale(src.tobytes(), 10, 8, params, 4, upscaler=choices[2][1])
        assert planned.request.upscaler == "esrgan_x2" and editing.check_request(planned) is None
        r = client.generate(planned.request, planned.image)
        assert (r.images[0].image.width, r.images[0].image.height) == (40, 32) and r.parameters["upscaler"] == "esrgan_x2"
        assert editing.plan_upscale(src.tobytes(), 10, 8, params, 2, upscaler=choices[0][1]).request.upscaler is None
    assert editing.upscaler_choices(None) == [(LANCZOS_LABEL, "")]  # an older server: Lanczos only
    assert editing.upscaler_choices({"upscalers": [{"id": "a", "scale": None}, "junk"]}) == [
        (LANCZOS_LABEL, ""), ("a", "a")]


def test_easel_generate_with_upscaler(served, tmp_path):
    PILImage.fromarray(textured(16, 12)).save(tmp_path / "in.png")
    r = easel("generate", "--url", served[0], "--upscale", "2", "--upscaler", "esrgan_x2", "--strength", "0",
              "--image", str(tmp_path / "in.png"), "--out", str(tmp_path / "big.png"), "--quiet")
    assert r.returncode == 0, r.stderr
    assert PILImage.open(tmp_path / "big.png").size == (32, 24)
    r = easel("generate", "--url", served[0], "--upscale", "2", "--upscaler", "nope", "--image",
              str(tmp_path / "in.png"), "--out", str(tmp_path / "x.png"))
    assert r.returncode != 0 and "upscaler" in r.stderr and "esrgan_x2" in r.stderr and "Traceback" not in r.stderr
