"""``prefer_inpaint_models``: a fill, expand or remove job on a plain model runs on a served inpainting model of
its family (tiny SD 1.x plus a tiny 9-channel SD inpainting model): the same pixels as the job sent to the
inpainting model directly, ``inpaint_model`` in the parameters; refine stays on the plain model, and so does
everything with the setting off; through a real in-process server too."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from easel.client.protocol import GenerateRequest, Image
from easel.server.engine import Engine
from easel.server.generation import run_generation
from easel.server.settings import ServeSettings, engine_kwargs
from easel.server.work import Inputs
from helpers.pictures import box_mask, rgba_image, texture

torch.set_num_threads(1)  # 2 shared cores
IMAGE, MASK = texture(64, 64, seed=3), box_mask(64, 64, (16, 16, 32, 32))


@pytest.fixture(scope="module")
def inpainter(tmp_path_factory) -> str:
    from helpers.tiny_models import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny_models") / "tiny-sd-inpainting", inpaint_unet=True)


@pytest.fixture(scope="module")
def both(tiny_sd_path, inpainter):
    with Engine([tiny_sd_path, inpainter], device="cpu", dtype="float32") as engine:
        yield engine


def generate(engine, model: str | None = None, **fields):
    request = GenerateRequest(job="j", preview=False, **{"prompt": "a red circle", "steps": 2, "seed": 5, **fields})
    return run_generation(engine, request, Inputs("inpaint", IMAGE, MASK), engine.model_info(model),
                          lambda p: None, lambda: False)


def test_fill_runs_on_the_inpainting_model(both):
    plain, inpaint = (m.id for m in both.models())
    out = generate(both, inpaint_mode="fill")
    direct = generate(both, inpaint, inpaint_mode="fill")
    assert out.parameters["model"] == plain and out.parameters["inpaint_model"] == inpaint
    assert "inpaint_model" not in direct.parameters and direct.parameters["model"] == inpaint
    assert np.array_equal(out.layers[0].rgba, direct.layers[0].rgba)
    removed = generate(both, inpaint_mode="remove")
    assert removed.parameters["inpaint_model"] == inpaint


def test_refine_stays_on_the_plain_model(both):
    out = generate(both, inpaint_mode="refine", strength=0.6)
    assert "inpaint_model" not in out.parameters and out.parameters["inpaint_mode"] == "refine"


def test_setting_off_keeps_the_chosen_model(tiny_sd_path, inpainter, both):
    settings = ServeSettings(prefer_inpaint_models=False)
    kwargs = engine_kwargs(settings, [tiny_sd_path, inpainter])
    assert kwargs["prefer_inpaint_models"] is False and engine_kwargs(ServeSettings(), [])["prefer_inpaint_models"]
    with Engine(**{**kwargs, "device": "cpu", "dtype": "float32"}) as off:
        out = generate(off, inpaint_mode="fill")
    assert "inpaint_model" not in out.parameters
    on = generate(both, inpaint_mode="fill")
    assert not np.array_equal(out.layers[0].rgba, on.layers[0].rgba)


def test_through_a_real_server(both):
    from easel.client.connection import Client
    from helpers.server_harness import inprocess_server

    inpaint = both.models()[1].id
    with inprocess_server(both) as (url, _), Client(url, image_format="rgba") as client:
        request = GenerateRequest(job="a", prompt="a red circle", steps=2, seed=5, inpaint_mode="fill")
        result = client.generate(request, rgba_image(IMAGE), Image.gray(64, 64, MASK.tobytes()))
    assert result.parameters["inpaint_model"] == inpaint
