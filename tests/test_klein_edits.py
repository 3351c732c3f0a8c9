"""FLUX.2 Klein as an edit model (a tiny random Klein folder): the welcome's ``edit`` feature, a whole edit, one
with a reference picture and a selection edit equal to raw Flux2KleinPipeline / Flux2KleinInpaintPipeline at the
job's size, reference strengths other than 0 and 1 refused naming the field, and through a real server and
``easel generate``: a selection edit leaves every pixel outside the selection as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from easel.client.items import Control
from easel.server.engine import Engine, EngineJob
from easel.server.engine.types import EngineError
from easel.server.families import Family
from helpers.edit_pictures import H, W, picture, reference, selection, with_reference
from helpers.engine_checks import arr, assert_close, run
from helpers.server_harness import inprocess_server

torch.set_num_threads(1)
PROMPT = "make it night"


@pytest.fixture(scope="module")
def klein_path(tmp_path_factory) -> str:
    from helpers.tiny_2026_models import build_tiny_flux2_klein

    return build_tiny_flux2_klein(tmp_path_factory.mktemp("tiny_models") / "tiny-flux2-klein")


@pytest.fixture(scope="module")
def engine(klein_path):
    with Engine([klein_path], device="cpu", dtype="float32") as eng:
        yield eng


@pytest.fixture(scope="module")
def raw(klein_path):
    from diffusers import Flux2KleinInpaintPipeline, Flux2KleinPipeline

    edit = Flux2KleinPipeline.from_pretrained(klein_path, dtype=torch.float32)
    pipes = {"edit": edit, "inpaint": Flux2KleinInpaintPipeline.from_pipe(edit)}
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
    return pipes


def edit_job(mode: str, **kw) -> EngineJob:
    kw.setdefault("seeds", [7])
    return EngineJob(mode=mode, prompt=PROMPT, width=W, height=H, steps=3, strength=0.4, **kw)


def raw_call(pipe, seed: int, **kw) -> Image.Image:
    return pipe(prompt=PROMPT, num_inference_steps=3, guidance_scale=1.0, width=W, height=H,
                generator=torch.Generator("cpu").manual_seed(seed), **kw).images[0]


def test_the_welcome_lists_edit_and_reference_layers(engine):
    info = engine.models()[0]
    assert info.family == "flux2-klein" and "edit" in info.features and info.controls == ["reference"]
    assert Family.FLUX2_KLEIN.pipeline_class("img2img") == "Flux2KleinPipeline"
    assert Family.FLUX2_KLEIN.pipeline_class("inpaint") == "Flux2KleinInpaintPipeline"


def test_whole_edit_equals_raw_klein_with_the_picture(engine, raw):
    """An image without a mask is an edit: the picture is Klein's image, strength is unused (1)."""
    images = run(engine, edit_job("img2img", image=picture(), seeds=[7, 8]))
    for img, seed in zip(images, [7, 8]):
        assert img.size == (W, H) and img.info["easel"]["strength"] == 1.0 and img.info["easel"]["steps"] == 3
        assert_close(img, raw_call(raw["edit"], seed, image=[picture()]))
    assert np.abs(arr(images[0]) - arr(images[1])).max() > 10


def test_a_reference_layer_is_a_second_picture(engine, raw):
    (plain,) = run(engine, edit_job("img2img", image=picture()))
    (img,) = run(engine, edit_job("img2img", image=picture(), **with_reference()))
    assert_close(img, raw_call(raw["edit"], 7, image=[picture(), reference()]))
    assert np.abs(arr(img) - arr(plain)).max() > 0
    assert img.info["easel"]["features"]["controls"] == [{"kind": "reference", "strength": 1.0, "start": 0.0,
                                                          "end": 1.0}]
    (off,) = run(engine, edit_job("img2img", image=picture(), **with_reference(0.0)))
    assert np.array_equal(arr(off), arr(plain))


def test_selection_edit_equals_raw_klein_inpaint(engine, raw):
    (img,) = run(engine, edit_job("inpaint", image=picture(), mask=selection()))
    assert img.size == (W, H) and img.info["easel"]["strength"] == 1.0
    assert_close(img, raw_call(raw["inpaint"], 7, image=picture(), mask_image=selection(), strength=1.0))
    (ref,) = run(engine, edit_job("inpaint", image=picture(), mask=selection(), **with_reference()))
    assert_close(ref, raw_call(raw["inpaint"], 7, image=picture(), mask_image=selection(), strength=1.0,
                               image_reference=reference()))


def test_text_to_image_stays(engine, raw):
    (img,) = run(engine, edit_job("txt2img"))
    assert_close(img, raw_call(raw["edit"], 7))


@pytest.mark.parametrize(("control", "field"), [(Control(kind="reference", image="ref", strength=0.5),
                                                 "controls[0].strength"),
                                                (Control(kind="style", image="ref"), "controls[0].kind")])
def test_other_reference_strengths_and_kinds_are_refused(engine, control, field):
    with pytest.raises(EngineError) as err:
        run(engine, edit_job("img2img", image=picture(), controls=[control], attached={"ref": reference()}))
    assert err.value.field == field and "FLUX.2 Klein" in str(err.value)


def test_cli_selection_edit_changes_the_selection_only(klein_path, tmp_path):
    from easel.cli import main

    picture().save(tmp_path / "in.png")
    selection().save(tmp_path / "sel.png")
    with inprocess_server(Engine([klein_path], device="cpu", dtype="float32")) as (url, _app):
        # grow/feather 0: the edge is not blended outward, so every pixel outside the selection stays as it was
        assert main(["generate", "--url", url, "--prompt", PROMPT, "--steps", "3", "--seed", "7", "--quiet",
                     "--exact-size", "--image", str(tmp_path / "in.png"), "--mask", str(tmp_path / "sel.png"),
                     "--grow", "0", "--feather", "0", "--out", str(tmp_path / "out.png")]) == 0
    out, before = arr(Image.open(tmp_path / "out.png").convert("RGB")), arr(picture())
    inside = np.asarray(selection()) == 255
    assert out.shape == before.shape and np.array_equal(out[~inside], before[~inside])
    assert np.abs(out[inside] - before[inside]).max() > 10
