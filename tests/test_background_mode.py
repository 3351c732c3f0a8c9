"""The ``background`` selection mode: a rembg model (a tiny ONNX one built here, loaded as rembg's custom model)
finds the subject; the tiny SD model paints a new background over the whole picture or a selection less the
subject, whose pixels stay bit-exact; the model setting (``--background-model``) from the settings to the job,
a file named like a rembg model run by that model's session, the errors for a missing or unknown model and for
no picture; through a real in-process server.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from easel.client.protocol import GenerateRequest, Image, ProtocolError
from easel.server import background
from easel.server.engine import Engine
from easel.server.engine.types import EngineError
from easel.server.generation import check_attachments, run_generation
from easel.server.imaging.compose import LayerResult, flatten
from easel.server.limits import Limits
from easel.server.settings import ServeSettings, engine_kwargs
from easel.server.work import Inputs
from helpers.pictures import box_mask, rgba_image
from helpers.tiny_background import disc_core, subject_picture

torch.set_num_threads(1)  # 2 shared cores
PICTURE = subject_picture()
CORE = disc_core()


def generate(engine, mask=None, **fields):
    request = GenerateRequest(job="j", preview=False, **{"prompt": "a field", "steps": 2, "seed": 5,
                                                         "inpaint_mode": "background", **fields})
    inputs = Inputs("img2img" if mask is None else "inpaint", PICTURE, mask)
    return run_generation(engine, request, inputs, engine.model_info(None), lambda p: None, lambda: False)


def flattened(out) -> np.ndarray:
    layer = out.layers[0]
    return flatten(PICTURE, LayerResult(layer.rgba, layer.x, layer.y))


def test_the_tiny_model_finds_the_drawn_subject(redness_model):
    matte = background.subject_matte(PICTURE, redness_model)
    assert matte.shape == PICTURE.shape[:2] and matte.dtype == np.uint8
    assert (matte[CORE] == 255).all()  # the disc's inside is subject, fully
    assert matte[:6].max() == 0 and matte[:, :6].max() == 0  # the backdrop along the edges is not


def test_whole_picture_keeps_the_subject_and_paints_a_new_background(background_engine, redness_model):
    out = generate(background_engine)
    result = flattened(out)
    subject = background.subject_matte(PICTURE, redness_model) == 255
    assert result.shape == PICTURE.shape
    assert np.array_equal(result[subject], PICTURE[subject])  # every pixel of the subject bit-exact
    assert subject[CORE].all()
    backdrop = background.subject_matte(PICTURE, redness_model) == 0
    changed = np.any(result[backdrop] != PICTURE[backdrop], axis=-1)
    assert changed.mean() > 0.9  # the background is new
    layer = out.layers[0]
    assert (layer.x, layer.y) == (0, 0) and layer.rgba.shape[:2] == PICTURE.shape[:2]
    p = out.parameters
    assert p["inpaint_mode"] == "background" and p["strength"] == 1.0 and p["prompt"] == "a field"


def test_a_selection_limits_the_new_background(background_engine, redness_model):
    selection = box_mask(64, 64, (0, 0, 40, 64))  # the left part, with the disc's left half
    out = generate(background_engine, mask=selection)
    result = flattened(out)
    subject = background.subject_matte(PICTURE, redness_model) == 255
    assert np.array_equal(result[subject], PICTURE[subject])
    assert np.array_equal(result[:, 52:], PICTURE[:, 52:])  # beyond the selection and its blend: untouched
    left = np.any(result[:, :12] != PICTURE[:, :12], axis=-1)
    assert left.mean() > 0.9  # the selected backdrop is new


def test_the_setting_reaches_the_engine_and_the_cli(redness_model):
    assert ServeSettings().background_model == background.DEFAULT_MODEL == "isnet-general-use"
    assert engine_kwargs(ServeSettings(background_model=redness_model), [])["background_model"] == redness_model


def test_a_file_named_like_a_rembg_model_runs_with_that_models_session(redness_model, tmp_path):
    named = tmp_path / "u2net.onnx"
    named.write_bytes(open(redness_model, "rb").read())
    session = background._session(str(named))
    assert isinstance(session, background.session_classes()["u2net"])
    assert np.array_equal(background.subject_matte(PICTURE, str(named)), background.subject_matte(PICTURE, redness_model))


def test_a_missing_model_offline_says_the_setting_and_the_download(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("U2NET_HOME", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(EngineError) as err:
        background.subject_matte(PICTURE, "u2netp")
    message = str(err.value)
    assert "--background-model" in message and "'u2netp'" in message and "HF_HUB_OFFLINE" in message
    assert "downloads it on first use" in message and str(tmp_path) in message and err.value.field == "inpaint_mode"


def test_an_unknown_model_lists_the_names():
    with pytest.raises(EngineError, match=r"--background-model 'nope' is neither a file nor a rembg model.*u2net"):
        background.subject_matte(PICTURE, "nope")


def test_background_needs_a_picture():
    request = GenerateRequest(job="j", prompt="p", inpaint_mode="background")
    with pytest.raises(ProtocolError, match="send the canvas as 'image'") as err:
        check_attachments(request, {}, Limits())
    assert err.value.field == "inpaint_mode"


def test_through_a_real_server(tiny_sd_path, background_engine, tmp_path, monkeypatch):
    from easel.client.connection import Client, JobFailed
    from helpers.pictures import pixels
    from helpers.server_harness import inprocess_server

    request = GenerateRequest(job="a", prompt="a field", steps=2, seed=5, inpaint_mode="background")
    with inprocess_server(background_engine) as (url, _), Client(url, image_format="rgba") as client:
        result = client.generate(request, rgba_image(PICTURE), Image.gray(64, 64, np.full((64, 64), 255,
                                                                                        np.uint8).tobytes()))
    image = result.images[0]
    layer = LayerResult(pixels(image.image), image.x, image.y)
    core = flatten(PICTURE, layer)[CORE]
    assert np.array_equal(core, PICTURE[CORE]) and result.parameters["inpaint_mode"] == "background"

    monkeypatch.setenv("U2NET_HOME", str(tmp_path))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with Engine([tiny_sd_path], device="cpu", dtype="float32", background_model="u2netp") as missing, \
            inprocess_server(missing) as (url, _), Client(url, image_format="rgba") as client:
        with pytest.raises(JobFailed) as err:
            client.generate(replace_job(request, "b"), rgba_image(PICTURE))
    assert err.value.code == "model_load_failed" and "--background-model" in str(err.value)


def replace_job(request: GenerateRequest, job: str) -> GenerateRequest:
    from dataclasses import replace

    return replace(request, job=job)
