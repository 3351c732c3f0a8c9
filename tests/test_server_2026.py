"""The 2026 families (tiny Chroma, Z-Image, Qwen-Image and FLUX.2 Klein) through a real in-process server:
the welcome's families and per-model features, the three uses with seeds per image, a text-to-image result
equal to the engine's own, and a refused feature naming the field."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from easel.client.connection import Client, JobFailed
from easel.client.protocol import Image
from easel.server.engine import Engine, EngineJob
from helpers.engine_checks import gradient, run
from helpers.server_harness import short_request, stored_server

torch.set_num_threads(1)
SIZE = 64
FEATURES = {"chroma": ["negative_prompt", "loras", "variation_seed"],
            "z-image": ["negative_prompt", "loras", "variation_seed"],
            "qwen-image": ["negative_prompt", "loras", "variation_seed"], "flux2-klein": ["loras", "edit"]}


@pytest.fixture(scope="module")
def paths(tiny_2026_paths) -> dict[str, str]:
    """The tiny families, FLUX.2 Klein as its distilled 4B."""
    return {f: tiny_2026_paths[f] for f in ("chroma", "z-image", "qwen-image")} | \
        {"flux2-klein": tiny_2026_paths["flux2-klein-4B"]}


@pytest.fixture(scope="module")
def served(paths, tmp_path_factory):
    with stored_server(list(paths.values()), tmp_path_factory.mktemp("results")) as found:
        yield found


req = short_request


def canvas() -> Image:
    rgb = np.asarray(gradient(SIZE))
    return Image.rgba(SIZE, SIZE, np.dstack([rgb, np.full((SIZE, SIZE), 255, np.uint8)]).tobytes())


def _model(client: Client, family: str) -> str:
    return next(m["id"] for m in client.welcome["models"] if m["family"] == family)


def test_welcome_lists_the_families_and_their_features(client):
    models = {m["family"]: m for m in client.welcome["models"]}
    assert {f: models[f]["features"] for f in FEATURES} == FEATURES
    assert models["flux2-klein"]["few_step"] and models["qwen-image"]["native"] == [1328, 1328]


@pytest.mark.parametrize("family", list(FEATURES))
def test_three_uses_through_the_server(client, paths, family):
    model = _model(client, family)
    r = client.generate(req(model=model, width=SIZE, height=SIZE, batch=2, guidance=4.0))
    assert [i.seed for i in r.images] == [5, 6] and (r.images[0].image.width, r.images[0].image.height) == (SIZE, SIZE)
    with Engine([paths[family]], device="cpu", dtype="float32") as eng:  # the same job on the engine directly
        (direct,) = run(eng, EngineJob(mode="txt2img", prompt="a red circle", width=SIZE, height=SIZE, steps=2,
                                       guidance=4.0, seeds=[6], negative_prompt=""))
    served_rgb = np.frombuffer(r.images[1].image.data, np.uint8).reshape(SIZE, SIZE, 4)[..., :3]
    assert np.abs(served_rgb.astype(int) - np.asarray(direct, int)).max() <= 1
    r = client.generate(req(model=model, strength=0.6), canvas())
    assert (r.images[0].image.width, r.images[0].image.height) == (SIZE, SIZE)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[16:48, 16:48] = 255
    r = client.generate(req(model=model, strength=1.0), canvas(), Image.gray(SIZE, SIZE, mask.tobytes()))
    assert r.images and r.images[0].image.width <= SIZE


def test_klein_refuses_a_negative_prompt(client):
    with pytest.raises(JobFailed) as err:
        client.generate(req(model=_model(client, "flux2-klein"), negative_prompt="blurry"))
    assert err.value.field == "negative_prompt" and "FLUX.2 Klein" in str(err.value)
