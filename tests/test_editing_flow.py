"""Plugin logic for SD3/Flux models: the dialogs' choices follow the chosen model's features from the
welcome, and what a hidden control still holds (a stored negative prompt) never reaches the server."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from easel.client import editing
from easel.client.connection import Client
from easel.server.engine import Engine
from helpers.server_harness import inprocess_server

torch.set_num_threads(1)
WELCOME = {"default_model": "flux", "loras": ["a.safetensors", "f.safetensors"], "control_models": ["sketch"],
           "refiner": "refiner-xl", "models": [
               {"id": "flux", "family": "flux", "features": ["loras", "variation_seed"], "loras": ["f.safetensors"]},
               {"id": "sd3", "family": "sd3", "features": ["negative_prompt", "loras", "variation_seed"], "loras": []},
               {"id": "xl", "family": "sdxl", "features": ["negative_prompt", "scheduler", "loras", "control_model",
                                                           "variation_seed", "refiner"], "loras": ["a.safetensors"]},
               {"id": "old", "family": "sd1"}]}  # an older server: no features list, everything offered


def test_choices_follow_the_model():
    flux = editing.feature_choices(WELCOME)
    assert (flux["loras"], flux["control_models"], flux["refiner"]) == (["f.safetensors"], [], False)
    assert not flux["negative_prompt"] and flux["variations"] and not flux["scheduler"]
    sd3 = editing.feature_choices(WELCOME, "sd3")
    assert sd3["negative_prompt"] and sd3["control_models"] == [] and not sd3["refiner"]
    xl = editing.feature_choices(WELCOME, "xl")
    assert xl["control_models"] == ["sketch"] and xl["refiner"] and xl["negative_prompt"]
    old = editing.feature_choices(WELCOME, "old")
    assert old["control_models"] == ["sketch"] and old["negative_prompt"] and old["variations"]


def test_fit_to_model_drops_what_the_model_cannot_use():
    def request(model):
        return editing.GenerateRequest(job="j", prompt="p", negative_prompt="blurry", model=model, scheduler="ddim",
                                       control_model="sketch", refiner=True, variation_seed=3)

    r = editing.fit_to_model(request(None), WELCOME)  # the default model: flux
    assert (r.negative_prompt, r.scheduler, r.control_model, r.variation_seed) == ("", None, None, 3)
    assert r.refiner  # an explicit switch: the server answers a refiner the model lacks with a clear error
    r = editing.fit_to_model(request("xl"), WELCOME)
    assert (r.negative_prompt, r.scheduler, r.control_model, r.refiner) == ("blurry", "ddim", "sketch", True)


@pytest.fixture(scope="module")
def url(tiny_flux_path):
    with inprocess_server(Engine([tiny_flux_path], device="cpu", dtype="float32")) as (u, _app):
        yield u


def test_plugin_batch_on_flux_with_a_stored_negative_prompt(url):
    """The plugins' path (plan_request + generate_work) on a FLUX.1 model: a batch of 2 in the selection."""
    size = 64
    rgba = np.full((size, size, 4), 255, np.uint8)
    rgba[..., 0] = np.arange(size)[None] * 4
    selection = np.zeros((size, size), np.uint8)
    selection[8:56, 8:56] = 255
    state = editing.EditorState(size, size, rgba.tobytes(), (0, 0, size, size), selection.tobytes())
    params = editing.params_from_ui("a red circle", "blurry, ugly", 1.0, 2, -1.0, 9, 2)
    planned = editing.plan_request(state, params)
    planned.request.exact_size = True
    assert planned.mode == editing.INPAINT and planned.request.negative_prompt == "blurry, ugly"
    with Client(url, image_format="rgba") as client:
        result = editing.generate_work(planned)(client)
    assert [i.seed for i in result.images] == [9, 10]
    assert result.parameters.get("negative_prompt", "") == ""
