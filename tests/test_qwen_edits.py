"""Qwen-Image-Edit and Qwen-Image-Edit-Plus as edit models (tiny random folders, tiny_qwen_edit.py): detection,
defaults and the welcome's features; a whole edit, a selection edit and a Plus edit with a reference picture
equal to raw QwenImageEditPipeline / QwenImageEditPlusPipeline at the job's size (the raw pipelines get the same
image-only processor the engine loads: transformers' full one needs torchvision); seeds per image, previews and
cancel; what the models cannot do refused naming the field; and through a real server and ``easel generate``: a
Plus selection edit with a reference leaves every pixel outside the selection as it was."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import torch
from PIL import Image

from easel.server.engine import Engine, EngineJob
from easel.server.engine.qwen_edit import load_processor
from easel.server.engine.types import EngineError, JobCancelled
from easel.server.families import Family
from easel.server.traits import guess
from helpers.edit_pictures import H, W, picture, reference, selection, with_reference
from helpers.engine_checks import arr, assert_close, run
from helpers.server_harness import inprocess_server

torch.set_num_threads(1)
PROMPT = "make it blue"
STEPS = 2


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, str]:
    from helpers.tiny_qwen_edit import build_tiny_qwen_image_edit

    root = tmp_path_factory.mktemp("tiny_models")
    return {"edit": build_tiny_qwen_image_edit(root / "tiny-qwen-image-edit"),
            "plus": build_tiny_qwen_image_edit(root / "tiny-qwen-image-edit-2511", plus=True)}


@pytest.fixture(scope="module")
def engine(paths):
    with Engine([paths["edit"], paths["plus"]], device="cpu", dtype="float32") as eng:
        yield eng


@pytest.fixture(scope="module")
def raw(paths):
    """Raw diffusers pipelines of both folders, with their image-only processors; results cached per call."""
    from diffusers import QwenImageEditPipeline, QwenImageEditPlusPipeline

    pipes = {name: cls.from_pretrained(paths[name], processor=load_processor(f"{paths[name]}/processor"),
                                       dtype=torch.float32)
             for name, cls in (("edit", QwenImageEditPipeline), ("plus", QwenImageEditPlusPipeline))}
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)

    @cache
    def call(name: str, seed: int, references: int = 0) -> Image.Image:
        image = [picture(), *[reference()] * references] if name == "plus" else picture()
        return pipes[name](image=image, prompt=PROMPT, negative_prompt=" ", true_cfg_scale=4.0,
                           num_inference_steps=STEPS, width=W, height=H,
                           generator=torch.Generator("cpu").manual_seed(seed)).images[0]

    return call


def edit_job(model: str, mode: str = "img2img", **kw) -> EngineJob:
    kw.setdefault("seeds", [7])
    if mode != "txt2img":
        kw.setdefault("image", picture())
    return EngineJob(mode=mode, model=model, prompt=PROMPT, width=W, height=H, steps=STEPS, strength=0.4, **kw)


def test_detected_with_the_model_cards_defaults(engine):
    found = {m.id: m for m in engine.models()}
    edit, plus = found["tiny-qwen-image-edit"], found["tiny-qwen-image-edit-2511"]
    assert (edit.family, edit.native, edit.default_steps, edit.default_guidance) == (
        "qwen-image-edit", (1024, 1024), 50, 4.0)
    assert (plus.family, plus.default_steps, plus.default_guidance) == ("qwen-image-edit-plus", 40, 4.0)
    assert edit.features == plus.features == ["negative_prompt", "loras", "edit"]
    assert plus.controls == ["reference"] and not edit.controls
    assert guess("Qwen/Qwen-Image-Edit-2511").family is Family.QWEN_IMAGE_EDIT_PLUS
    assert guess("Qwen/Qwen-Image-Edit").family is Family.QWEN_IMAGE_EDIT
    assert guess("Qwen/Qwen-Image").family is Family.QWEN_IMAGE


def test_whole_edit_equals_raw_with_seeds_per_image_and_previews(engine, raw):
    """An image without a mask is an edit: the picture is the pipeline's image, true CFG 4 against " ", strength
    unused (1); image i of a batch is a batch-1 raw run with seeds[i]; steps stream previews."""
    events: list = []
    images = run(engine, edit_job("tiny-qwen-image-edit", seeds=[7, 8]), events)
    for img, seed in zip(images, [7, 8]):
        assert img.size == (W, H) and img.info["easel"]["strength"] == 1.0 and img.info["easel"]["steps"] == STEPS
        assert img.info["easel"]["guidance"] == 4.0 and img.info["easel"]["seed"] == seed
        assert_close(img, raw("edit", seed))
    assert np.abs(arr(images[0]) - arr(images[1])).max() > 10
    steps = [e for e in events if e.stage == "denoise"]
    assert steps[-1].step == steps[-1].total == STEPS and any(e.preview is not None for e in steps)


def test_selection_edit_runs_the_edit_pipeline(engine, raw):
    """With a selection the engine edits the selection's picture with the edit pipeline (the server's blend
    keeps everything outside it: test_cli_selection_edit_…)."""
    (img,) = run(engine, edit_job("tiny-qwen-image-edit", "inpaint", mask=selection()))
    assert img.size == (W, H) and img.info["easel"]["strength"] == 1.0
    assert_close(img, raw("edit", 7))


def test_plus_takes_a_reference_layer_as_a_second_picture(engine, raw):
    (img,) = run(engine, edit_job("tiny-qwen-image-edit-2511", **with_reference()))
    assert_close(img, raw("plus", 7, references=1))
    assert img.info["easel"]["features"]["controls"] == [{"kind": "reference", "strength": 1.0, "start": 0.0,
                                                          "end": 1.0}]


def test_cancel_stops_within_a_step(engine):
    events: list = []
    with pytest.raises(JobCancelled):
        run(engine, edit_job("tiny-qwen-image-edit-2511"), events,
            cancelled=lambda: any(e.stage == "denoise" and e.step >= 1 for e in events))
    assert max(e.step for e in events if e.stage == "denoise") == 1


@pytest.mark.parametrize(("model", "job", "field", "words"), [
    ("tiny-qwen-image-edit", {"mode": "txt2img"}, "image", "Qwen-Image-Edit edits a picture and paints none"),
    ("tiny-qwen-image-edit", with_reference(), "controls", "control layers are for"),
    ("tiny-qwen-image-edit-2511", with_reference(0.5), "controls[0].strength", "Qwen-Image-Edit-Plus weighs every"),
    ("tiny-qwen-image-edit-2511", {"variation_seed": 3, "variation_strength": 0.5}, "variation_seed",
     "Qwen-Image-Edit-Plus edits start from pure noise"),
])
def test_what_the_models_cannot_do_is_refused_naming_the_field(engine, model, job, field, words):
    with pytest.raises(EngineError) as err:
        run(engine, edit_job(model, **job))
    assert err.value.field == field and words in str(err.value)


def test_cli_plus_selection_edit_with_a_reference_changes_the_selection_only(paths, tmp_path):
    from easel.cli import main

    picture().save(tmp_path / "in.png")
    selection().save(tmp_path / "sel.png")
    reference().save(tmp_path / "ref.png")
    with inprocess_server(Engine([paths["plus"]], device="cpu", dtype="float32")) as (url, _app):
        # grow/feather 0: the edge is not blended outward, so every pixel outside the selection stays as it was
        assert main(["generate", "--url", url, "--model", "tiny-qwen-image-edit-2511", "--prompt", PROMPT,
                     "--steps", str(STEPS), "--seed", "7", "--quiet", "--exact-size", "--image", str(tmp_path / "in.png"),
                     "--mask", str(tmp_path / "sel.png"), "--reference", str(tmp_path / "ref.png"), "--grow", "0",
                     "--feather", "0", "--out", str(tmp_path / "out.png")]) == 0
    out, before = arr(Image.open(tmp_path / "out.png").convert("RGB")), arr(picture())
    inside = np.asarray(selection()) == 255
    assert out.shape == before.shape and np.array_equal(out[~inside], before[~inside])
    assert np.abs(out[inside] - before[inside]).max() > 10
