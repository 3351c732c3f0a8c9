"""Instruction edits with FLUX.1 Kontext (a tiny random Kontext folder): detection and the welcome's ``edit``
feature, whole-picture and selection edits equal to raw FluxKontextPipeline / FluxKontextInpaintPipeline at the
job's own size (Kontext would rescale to 1024² and its preferred sizes), text to image as FLUX.1, and through a
real server and ``easel generate``: the canvas edited, a selection edited with the rest bit-exact, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from easel.client.connection import Client, new_job_id
from easel.client.protocol import GenerateRequest
from easel.client.protocol import Image as WireImage
from easel.server.engine import Engine, EngineJob
from easel.server.families import Family
from easel.server.traits import guess
from helpers.engine_checks import arr, assert_close, gradient, run
from helpers.server_harness import inprocess_server

torch.set_num_threads(1)
W, H = 80, 48  # not square, not a Kontext size: the job must come back at exactly this size
PROMPT = "make it night"


@pytest.fixture(scope="module")
def kontext_path(tmp_path_factory) -> str:
    from helpers.tiny_kontext import build_tiny_kontext

    return build_tiny_kontext(tmp_path_factory.mktemp("tiny_models") / "tiny-flux-kontext")


@pytest.fixture(scope="module")
def engine(kontext_path):
    with Engine([kontext_path], device="cpu", dtype="float32") as eng:
        yield eng


@pytest.fixture(scope="module")
def raw(kontext_path):
    from diffusers import FluxKontextInpaintPipeline, FluxKontextPipeline

    edit = FluxKontextPipeline.from_pretrained(kontext_path, dtype=torch.float32)
    pipes = {"edit": edit, "inpaint": FluxKontextInpaintPipeline.from_pipe(edit)}
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
    return pipes


def picture() -> Image.Image:
    return gradient(W).crop((0, 0, W, H))


def selection() -> Image.Image:
    mask = np.zeros((H, W), np.uint8)
    mask[8:40, 24:64] = 255
    return Image.fromarray(mask, "L")


def edit_job(mode: str, **kw) -> EngineJob:
    kw.setdefault("seeds", [7])
    return EngineJob(mode=mode, prompt=PROMPT, width=W, height=H, steps=3, strength=0.4, **kw)


def raw_call(pipe, seed: int, **kw) -> Image.Image:
    """The raw pipeline at the job's size: max_area W*H, no snapping to Kontext's preferred sizes."""
    return pipe(prompt=PROMPT, num_inference_steps=3, guidance_scale=2.5, width=W, height=H, max_area=W * H,
                _auto_resize=False, generator=torch.Generator("cpu").manual_seed(seed), **kw).images[0]


def test_detected_with_defaults_and_the_edit_feature(engine, kontext_path, tiny_flux_path):
    info = engine.model_info(None)
    assert (info.family, info.default_steps, info.default_guidance) == ("flux-kontext", 28, 2.5)
    assert "edit" in info.features and "negative_prompt" not in info.features
    assert Family.FLUX_KONTEXT.pipeline_class("img2img") == "FluxKontextPipeline"
    assert Family.FLUX_KONTEXT.pipeline_class("inpaint") == "FluxKontextInpaintPipeline"
    assert guess("black-forest-labs/FLUX.1-Kontext-dev").family is Family.FLUX_KONTEXT
    assert guess("black-forest-labs/FLUX.1-dev").family is Family.FLUX
    with Engine([tiny_flux_path], device="cpu", dtype="float32") as flux:
        assert "edit" not in flux.model_info(None).features


def test_found_in_a_models_folder(tmp_path):
    from helpers.tiny_kontext import build_tiny_kontext

    build_tiny_kontext(tmp_path / "models" / "diffusers" / "tiny-flux-kontext")
    with Engine([], models_dir=tmp_path / "models", device="cpu", dtype="float32") as eng:
        found = {m.id: m for m in eng.models()}
    assert found["tiny-flux-kontext"].family == "flux-kontext" and "edit" in found["tiny-flux-kontext"].features


def test_whole_edit_equals_raw_kontext_at_the_job_size(engine, raw):
    """An image without a mask is an edit: the image is context, strength is unused (1), every step runs."""
    images = run(engine, edit_job("img2img", image=picture(), seeds=[7, 8]))
    for img, seed in zip(images, [7, 8]):
        assert img.size == (W, H) and img.info["easel"]["strength"] == 1.0 and img.info["easel"]["steps"] == 3
        assert_close(img, raw_call(raw["edit"], seed, image=picture()))
    assert np.abs(arr(images[0]) - arr(images[1])).max() > 10
    # left to its defaults, Kontext would have run at another size
    assert raw["edit"](prompt=PROMPT, image=picture(), num_inference_steps=1, width=W, height=H,
                       output_type="pil").images[0].size != (W, H)


def test_selection_edit_equals_raw_kontext_inpaint(engine, raw):
    (img,) = run(engine, edit_job("inpaint", image=picture(), mask=selection()))
    assert img.size == (W, H) and img.info["easel"]["strength"] == 1.0
    assert_close(img, raw_call(raw["inpaint"], 7, image=picture(), mask_image=selection(), strength=1.0))


def test_text_to_image_runs_as_flux(engine, raw):
    (img,) = run(engine, edit_job("txt2img"))
    assert_close(img, raw_call(raw["edit"], 7))


def test_flux_loras_are_offered_and_edit_with_it(kontext_path, tiny_flux_path, tmp_path):
    """Kontext keeps FLUX.1-dev's blocks: a FLUX.1 LoRA is offered to it, changes the edit and is taken out."""
    from helpers.tiny_flow_models import write_tiny_flow_lora

    write_tiny_flow_lora(tiny_flux_path, tmp_path / "loras" / "flux-ink.safetensors")
    with Engine([kontext_path], device="cpu", dtype="float32", loras_dir=tmp_path / "loras") as eng:
        assert eng.models()[0].loras == ["flux-ink.safetensors"]
        (plain,) = run(eng, edit_job("img2img", image=picture()))
        (inked,) = run(eng, edit_job("img2img", image=picture(), loras=[("flux-ink.safetensors", 1.0)]))
        (again,) = run(eng, edit_job("img2img", image=picture()))
    assert not np.array_equal(arr(plain), arr(inked)) and np.array_equal(arr(plain), arr(again))
    assert inked.info["easel"]["features"]["loras"] == [{"name": "flux-ink.safetensors", "weight": 1.0}]


@pytest.fixture(scope="module")
def served(kontext_path):
    engine = Engine([kontext_path], device="cpu", dtype="float32")
    with inprocess_server(engine) as (url, app):
        yield url


def test_server_whole_edit_equals_raw(served, raw):
    rgba = np.dstack([np.asarray(picture()), np.full((H, W), 255, np.uint8)])
    with Client(served, image_format="rgba") as client:
        entry = client.welcome["models"][0]
        assert entry["family"] == "flux-kontext" and "edit" in entry["features"]
        r = client.generate(GenerateRequest(job=new_job_id(), prompt=PROMPT, steps=3, seed=7, exact_size=True),
                            WireImage.rgba(W, H, rgba.tobytes()))
    layer = r.images[0]
    assert (layer.x, layer.y, layer.image.width, layer.image.height) == (0, 0, W, H)
    got = np.frombuffer(layer.image.data, np.uint8).reshape(H, W, 4)[..., :3]
    want = np.asarray(raw_call(raw["edit"], 7, image=picture()), np.int16)
    assert np.abs(got.astype(np.int16) - want).max() <= 1 and r.parameters["strength"] == 1.0


def test_server_selection_edit_keeps_the_pixels_it_edits(served):
    """With an edit model ``auto`` refines (Kontext must see what it edits, not a pre-filled hole) and the
    strength is unused: strength 1 (a fill on other models) and 0.5 give the same layer."""
    rgba = np.dstack([np.asarray(picture()), np.full((H, W), 255, np.uint8)])
    layers = []
    with Client(served, image_format="rgba") as client:
        for strength in (1.0, 0.5):
            r = client.generate(GenerateRequest(job=new_job_id(), prompt=PROMPT, steps=3, seed=7, exact_size=True,
                                                strength=strength), WireImage.rgba(W, H, rgba.tobytes()),
                                WireImage.gray(W, H, np.asarray(selection()).tobytes()))
            assert r.parameters["inpaint_mode"] == "refine" and r.parameters["strength"] == 1.0
            layers.append((r.images[0].x, r.images[0].y, r.images[0].image.data))
    assert layers[0] == layers[1]


def test_cli_selection_edit_changes_the_selection_only(served, tmp_path, capsys):
    from easel.cli import main

    picture().save(tmp_path / "in.png")
    selection().save(tmp_path / "sel.png")
    common = ["generate", "--url", served, "--prompt", PROMPT, "--steps", "3", "--seed", "7", "--quiet",
              "--exact-size", "--image", str(tmp_path / "in.png")]
    # grow/feather 0: the edge is not blended outward, so every pixel outside the selection stays as it was
    assert main([*common, "--mask", str(tmp_path / "sel.png"), "--grow", "0", "--feather", "0",
                 "--out", str(tmp_path / "out.png")]) == 0
    out, before = arr(Image.open(tmp_path / "out.png").convert("RGB")), arr(picture())
    inside = np.asarray(selection()) == 255
    assert out.shape == before.shape and np.array_equal(out[~inside], before[~inside])
    assert np.abs(out[inside] - before[inside]).max() > 10
    # Kontext takes its one picture as context: a reference layer is refused, naming the field
    Image.new("RGB", (16, 16), "red").save(tmp_path / "ref.png")
    capsys.readouterr()
    assert main([*common, "--reference", str(tmp_path / "ref.png"), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "controls[0]" in err and "FLUX.1 Kontext" in err and "Traceback" not in err
