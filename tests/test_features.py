"""Power features on tiny real models (built here, no mocks): LoRA, ControlNet, variations, the SDXL
refiner and the safety checker, through the Engine, the real server and client, and the CLI."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from easel.client.connection import Client, JobFailed, new_job_id
from easel.client.protocol import GenerateRequest
from easel.client.protocol import Image as WireImage
from easel.server.engine import Engine, EngineError, EngineJob, JobCancelled
from helpers.pictures import engine_job
from helpers.server_harness import inprocess_server
from helpers.tiny_models import (
    build_tiny_controlnet,
    build_tiny_refiner,
    build_tiny_safety_checker,
    write_tiny_lora,
)

torch.set_num_threads(1)  # 2 shared cores
SIZE = 64


@pytest.fixture(scope="module")
def assets(tiny_sd_path, tiny_sdxl_path, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("features")
    loras = root / "loras"
    write_tiny_lora(tiny_sd_path, loras / "ink.safetensors", seed=1, text_encoder=True)
    write_tiny_lora(tiny_sd_path, loras / "styles" / "soft.safetensors", seed=2)
    write_tiny_lora(tiny_sdxl_path, loras / "xl-ink.safetensors", seed=3)
    return {"sd": str(tiny_sd_path), "xl": str(tiny_sdxl_path), "loras": str(loras),
            "cn": build_tiny_controlnet(tiny_sd_path, root / "scribble"),
            "cnxl": build_tiny_controlnet(tiny_sdxl_path, root / "scribble-xl"),
            "refiner": build_tiny_refiner(root / "refiner"),
            "nsfw_all": build_tiny_safety_checker(root / "checker", flag_all=True)}


@pytest.fixture(scope="module")
def engine(assets):
    with Engine([assets["sd"], assets["xl"]], device="cpu", dtype="float32", loras_dir=assets["loras"],
                control_models=[assets["cn"], assets["cnxl"]], refiner=assets["refiner"]) as eng:
        yield eng


def sketch() -> Image.Image:
    img = Image.new("RGB", (SIZE, SIZE))
    img.paste((255, 255, 255), (10, 10, 30, 54))
    return img


def photo() -> Image.Image:
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    return Image.fromarray(np.stack([x * 4, y * 4, np.full_like(x, 90)], -1).astype(np.uint8), "RGB")


def square_mask() -> Image.Image:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[16:48, 16:48] = 255
    return Image.fromarray(mask, "L")


def job(mode: str = "txt2img", **kw) -> EngineJob:
    return engine_job(mode, SIZE, "a red cat", photo() if mode != "txt2img" else None,
                      square_mask() if mode == "inpaint" else None, **kw)


def run(engine: Engine, j: EngineJob, events: list | None = None, cancelled=lambda: False) -> list[np.ndarray]:
    images = engine.run(j, (events if events is not None else []).append, cancelled)
    return [np.asarray(img, np.int16) for img in images]


def diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a - b).max())


def field_of(engine: Engine, j: EngineJob) -> str | None:
    with pytest.raises(EngineError) as err:
        engine.run(j, lambda p: None, lambda: False)
    return err.value.field


# ----------------------------------------------------------------------------- LoRA


def test_lora_listing_and_effect_and_clean_unload(engine):
    assert engine.loras() == ["ink.safetensors", "styles/soft.safetensors", "xl-ink.safetensors"]
    plain = run(engine, job())[0]
    inked = run(engine, job(loras=[("ink.safetensors", 1.0)]))[0]
    both = run(engine, job(loras=[("ink.safetensors", 1.0), ("styles/soft.safetensors", 0.7)]))[0]
    zero = run(engine, job(loras=[("ink.safetensors", 0.0)]))[0]
    after = run(engine, job())[0]
    assert diff(plain, inked) > 5 and diff(inked, both) > 5
    assert diff(plain, zero) == 0  # weight 0 = the model alone
    assert diff(plain, after) == 0  # nothing leaks into the next job, bit-exact
    assert not any(engine.pipeline(None).get_list_adapters().values())


def test_lora_errors_leave_the_model_clean(engine):
    plain = run(engine, job())[0]
    assert field_of(engine, job(loras=[("nope.safetensors", 1.0)])) == "loras"
    assert field_of(engine, job(loras=[("../ink.safetensors", 1.0)])) == "loras"
    # an SDXL LoRA on the SD model: refused, and the half-loaded adapters are gone again
    assert field_of(engine, job(loras=[("ink.safetensors", 1.0), ("xl-ink.safetensors", 1.0)])) == "loras"
    assert diff(plain, run(engine, job())[0]) == 0


def test_lora_on_sdxl_and_tensor_cache(engine):
    plain = run(engine, job(model="tiny-sdxl"))[0]
    styled = run(engine, job(model="tiny-sdxl", loras=[("xl-ink.safetensors", 1.5)]))[0]
    assert diff(plain, styled) > 5
    assert diff(plain, run(engine, job(model="tiny-sdxl"))[0]) == 0
    library = engine._loras
    first = library.tensors("ink.safetensors")
    again = library.tensors("ink.safetensors")
    assert first is not again and all(first[k] is again[k] for k in first)  # cached tensors, fresh dict


# ----------------------------------------------------------------------------- ControlNet


def test_controlnet_follows_strength(engine):
    assert engine.control_models() == ["scribble", "scribble-xl"]
    plain = run(engine, job())[0]
    at = {s: run(engine, job(control_model="scribble", control_image=sketch(), control_strength=s))[0]
          for s in (0.0, 0.01, 1.0)}
    assert diff(plain, at[0.0]) == 0  # strength 0 = no control
    assert diff(plain, at[0.01]) <= 3 < diff(plain, at[1.0])  # the scale reaches the ControlNet
    other = Image.new("RGB", (SIZE, SIZE))
    other.paste((255, 255, 255), (34, 5, 60, 20))
    assert diff(at[1.0], run(engine, job(control_model="scribble", control_image=other))[0]) > 5


@pytest.mark.parametrize("mode", ["img2img", "inpaint"])
def test_controlnet_image_modes(engine, mode):
    plain = run(engine, job(mode))[0]
    guided = run(engine, job(mode, control_model="scribble", control_image=sketch()))[0]
    assert diff(plain, guided) > 5


def test_controlnet_sdxl_and_errors(engine):
    plain = run(engine, job(model="tiny-sdxl"))[0]
    assert diff(plain, run(engine, job(model="tiny-sdxl", control_model="scribble-xl", control_image=sketch()))[0]) > 5
    assert field_of(engine, job(control_model="canny", control_image=sketch())) == "control_model"
    assert field_of(engine, job(control_model="scribble")) == "control"
    assert field_of(engine, job(control_model="scribble", control_image=sketch().resize((32, 32)))) == "control"
    assert field_of(engine, job(model="tiny-sdxl", control_model="scribble", control_image=sketch())) == "control_model"


# ----------------------------------------------------------------------------- variations


@pytest.mark.parametrize("mode,strength", [("txt2img", 1.0), ("img2img", 0.7), ("inpaint", 1.0), ("inpaint", 0.7)])
def test_variation_seed_blends_noise(engine, mode, strength):
    def var(s: float) -> list[np.ndarray]:
        return run(engine, job(mode, strength=strength, seeds=[7, 8], variation_seed=100, variation_strength=s))

    plain = run(engine, job(mode, strength=strength, seeds=[7, 8]))
    other = run(engine, job(mode, strength=strength, seeds=[100, 101]))
    zero, tiny, half, one = var(0.0), var(1e-4), var(0.5), var(1.0)
    for i in range(2):
        assert diff(zero[i], plain[i]) == 0 and diff(one[i], other[i]) == 0  # both ends bit-exact
        assert diff(tiny[i], plain[i]) <= 2  # continuous at 0
        assert diff(half[i], plain[i]) > 5 and diff(half[i], other[i]) > 5


def test_variation_info(engine):
    images = engine.run(job(seeds=[3, 4], variation_seed=50, variation_strength=0.3), lambda p: None, lambda: False)
    assert [img.info["easel"]["variation_seed"] for img in images] == [50, 51]
    assert images[0].info["easel"]["features"] == {"variation_seed": 50, "variation_strength": 0.3}


# ----------------------------------------------------------------------------- refiner


@pytest.mark.parametrize("mode", ["txt2img", "img2img", "inpaint"])
def test_refiner_handoff_and_progress(engine, mode):
    assert engine.refiners() == ["refiner"]
    base = run(engine, job(mode, model="tiny-sdxl", steps=10))[0]
    events: list = []
    refined = run(engine, job(mode, model="tiny-sdxl", steps=10, refiner=True, refiner_switch=0.7), events)
    assert diff(base, refined[0]) > 3
    steps = [(e.step, e.total) for e in events if e.stage == "denoise"]
    expected = 10 if mode == "txt2img" else 7  # int(steps x strength): base part + refiner part
    assert [s for s, _ in steps] == list(range(1, expected + 1))
    assert all(total == expected for _, total in steps)


def test_refiner_errors_and_cancel(engine, assets):
    assert field_of(engine, job(refiner=True)) == "refiner"  # SD 1.x model
    with Engine([assets["xl"]], device="cpu", dtype="float32") as bare:
        assert field_of(bare, job(refiner=True)) == "refiner"  # none configured
    seen: list = []

    def cancelled() -> bool:  # cancel in the refiner's part (after 8 base steps of 10)
        return any(e.stage == "denoise" and e.step >= 9 for e in seen)

    with pytest.raises(JobCancelled):
        run(engine, job(model="tiny-sdxl", steps=10, refiner=True), seen, cancelled)
    assert max(e.step for e in seen if e.stage == "denoise") == 9


# ----------------------------------------------------------------------------- safety checker


def test_safety_checker_blacks_out_flagged_images(assets):
    with Engine([assets["sd"]], device="cpu", dtype="float32") as off:
        assert not off.safety_checker
        plain = off.run(job(), lambda p: None, lambda: False)
        assert "nsfw" not in plain[0].info["easel"]
    with Engine([assets["sd"]], device="cpu", dtype="float32", safety_checker=assets["nsfw_all"]) as eng:
        assert eng.safety_checker
        images = eng.run(job(seeds=[1, 2]), lambda p: None, lambda: False)
    assert all(img.info["easel"]["nsfw"] is True and np.asarray(img).max() == 0 for img in images)


# ----------------------------------------------------------------------------- server, client and CLI


def rgba(img: Image.Image) -> WireImage:
    arr = np.asarray(img.convert("RGBA"))
    return WireImage.rgba(arr.shape[1], arr.shape[0], arr.tobytes())


def pixels(image: WireImage) -> np.ndarray:
    if image.format == "rgba":
        return np.frombuffer(image.data, np.uint8).reshape(image.height, image.width, 4)
    return np.asarray(Image.open(io.BytesIO(image.data)).convert("RGBA"))


def req(**kw) -> GenerateRequest:
    kw.setdefault("steps", 3)
    kw.setdefault("seed", 5)
    return GenerateRequest(job=new_job_id(), prompt="a red cat", **kw)


@pytest.fixture(scope="module")
def served(engine):
    with inprocess_server(engine) as (url, _):
        yield url


def test_server_welcome_and_features(served):
    with Client(served, image_format="rgba") as client:
        welcome = client.welcome
        assert welcome["loras"] == ["ink.safetensors", "styles/soft.safetensors", "xl-ink.safetensors"]
        assert welcome["control_models"] == ["scribble", "scribble-xl"]
        assert welcome["refiner"] == ["refiner"] and welcome["safety_checker"] is False
        plain = client.generate(req())
        result = client.generate(req(loras=[{"name": "ink.safetensors", "weight": 0.8}], control_model="scribble",
                                     variation_seed=9, variation_strength=0.4), control=rgba(sketch()))
        params = result.parameters
        assert params["loras"] == [{"name": "ink.safetensors", "weight": 0.8}]
        assert params["control_model"] == "scribble" and params["control_strength"] == 1.0
        assert params["variation_seed"] == 9 and params["variation_strength"] == 0.4
        assert int(np.abs(pixels(plain.images[0].image).astype(int) - pixels(result.images[0].image)).max()) > 5
        assert client.generate(req()).images[0].image.data == plain.images[0].image.data  # no leakage


def test_server_errors_name_the_field(served):
    with Client(served, image_format="rgba") as client:
        cases = [(req(loras=[{"name": "missing.safetensors"}]), None, "loras"),
                 (req(control_model="scribble"), None, "control"),
                 (req(), rgba(sketch()), "control_model"),
                 (req(control_model="nope"), rgba(sketch()), "control_model"),
                 (req(control_model="scribble", width=96, height=64), rgba(sketch()), "control"),
                 (req(refiner=True), None, "refiner")]
        for request, control, field in cases:
            with pytest.raises(JobFailed) as err:
                client.generate(request, control=control)
            assert err.value.field == field, (field, str(err.value))


def test_server_control_follows_the_work_region(served):
    """Inpainting a selection of a larger canvas: the control image is cropped and scaled like the image."""
    canvas = np.zeros((128, 160, 4), np.uint8)
    canvas[..., :3], canvas[..., 3] = 120, 255
    mask = np.zeros((128, 160), np.uint8)
    mask[40:90, 50:120] = 255
    guide = Image.new("RGB", (160, 128))
    guide.paste((255, 255, 255), (60, 50, 80, 80))
    with Client(served, image_format="rgba") as client:
        image, gray = WireImage.rgba(160, 128, canvas.tobytes()), WireImage.gray(160, 128, mask.tobytes())
        plain = client.generate(req(strength=0.8), image, gray)
        guided = client.generate(req(strength=0.8, control_model="scribble"), image, gray, control=rgba(guide))
    assert (guided.images[0].x, guided.images[0].y) == (plain.images[0].x, plain.images[0].y)
    a, b = pixels(plain.images[0].image).astype(int), pixels(guided.images[0].image).astype(int)
    assert a.shape == b.shape and int(np.abs(a - b).max()) > 5


def test_prepare_control_uses_the_image_plan():
    from easel.server.features import prepare_control
    from easel.server.imaging.compose import prepare
    from easel.server.imaging.region import plan_work

    rng = np.random.default_rng(0)
    image = np.dstack([rng.integers(0, 255, (120, 200, 3), dtype=np.uint8), np.full((120, 200), 255, np.uint8)])
    mask = np.zeros((120, 200), np.uint8)
    mask[30:70, 100:160] = 255
    plan = plan_work((200, 120), mask, (64, 64))
    work_image, _ = prepare(plan, image, mask)
    assert np.array_equal(np.asarray(prepare_control(plan, image)), np.asarray(work_image))
    clear = image.copy()
    clear[..., 3] = 0  # transparent = black (no line)
    assert np.asarray(prepare_control(plan, clear)).max() == 0


def test_cli_generate_with_feature_flags(served, tmp_path):
    from easel.cli import main, parse_lora

    assert parse_lora("ink.safetensors") == {"name": "ink.safetensors", "weight": 1.0}
    assert parse_lora("styles/soft.safetensors:-0.5") == {"name": "styles/soft.safetensors", "weight": -0.5}
    sketch().save(tmp_path / "sketch.png")
    out = tmp_path / "out.png"
    code = main(["generate", "--url", served, "--prompt", "a cat", "--steps", "2", "--seed", "3", "--quiet",
                 "--lora", "ink.safetensors:0.5", "--control-image", str(tmp_path / "sketch.png"),
                 "--control-model", "scribble", "--control-strength", "0.8", "--variation-seed", "4",
                 "--variation-strength", "0.5", "--out", str(out)])
    assert code == 0 and Image.open(out).size == (SIZE, SIZE)
    assert main(["generate", "--url", served, "--prompt", "a cat", "--steps", "2", "--refiner", "--quiet",
                 "--out", str(out)]) == 2  # SD model: the refiner is refused (field refiner)


def test_server_cancel_during_refiner(served):
    with Client(served, image_format="rgba") as client:
        job_id = client.submit(req(model="tiny-sdxl", steps=30, refiner=True, refiner_switch=0.5))
        done = threading.Event()
        for event in client.events(timeout=30):
            if event.type == "progress" and event.data.get("stage") == "denoise" and event.data["step"] >= 16:
                assert event.data["total"] == 30
                if not done.is_set():
                    client.cancel(job_id)
                    done.set()
            if event.type in ("cancelled", "result", "error"):
                assert event.type == "cancelled"
                break


def test_unknown_feature_names_are_refused_at_submit(tiny_sd_path):
    """Names are checked against what the server offers before the job is queued; no name is a path."""
    engine = Engine([str(tiny_sd_path)], device="cpu", dtype="float32")
    with inprocess_server(engine) as (url, app), Client(url) as c:
        for patch, field in (({"loras": [{"name": "../../etc/passwd", "weight": 1}]}, "loras"),
                             ({"refiner": True}, "refiner")):
            c.submit(GenerateRequest(job=new_job_id(), prompt="x", steps=1, **patch))
            event = next(e for e in c.events(timeout=30) if e.type in ("error", "queued", "result"))
            assert event.type == "error" and event.data["field"] == field, event.data
