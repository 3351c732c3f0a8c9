"""SD 3/3.5 and FLUX.1 (tiny models) through a real in-process server and `easel generate`: the three
uses, the welcome's per-model features, dtype and offload, and the error for an unsupported feature."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from easel.client.connection import JobFailed
from easel.client.protocol import Image
from helpers.server_harness import short_request, stored_server

torch.set_num_threads(1)
SIZE = 64


@pytest.fixture(scope="module")
def served(tiny_sd3_path, tiny_flux_path, tmp_path_factory):
    with stored_server([tiny_flux_path, tiny_sd3_path], tmp_path_factory.mktemp("results")) as found:
        yield found


req = short_request


def canvas() -> np.ndarray:
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    rgb = np.stack([x * 4, y * 4, np.full_like(x, 90)], -1).astype(np.uint8)
    return np.dstack([rgb, np.full((SIZE, SIZE), 255, np.uint8)])


def test_welcome_lists_features_dtype_and_offload(client):
    models = {m["family"]: m for m in client.welcome["models"]}
    assert models["flux"]["features"] == ["loras", "variation_seed"]
    assert models["sd3"]["features"] == ["negative_prompt", "loras", "variation_seed"]
    assert all(m["dtype"] == "float32" and m["offload"] == "none" for m in models.values())


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_three_uses_through_the_server(client, family):
    model = next(m["id"] for m in client.welcome["models"] if m["family"] == family)
    base = canvas()
    r = client.generate(req(model=model, width=SIZE, height=SIZE, batch=2))
    assert len(r.images) == 2 and (r.images[0].image.width, r.images[0].image.height) == (SIZE, SIZE)
    assert [i.seed for i in r.images] == [5, 6]
    r = client.generate(req(model=model, strength=0.6), Image.rgba(SIZE, SIZE, base.tobytes()))
    assert (r.images[0].image.width, r.images[0].image.height) == (SIZE, SIZE)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[16:48, 16:48] = 255
    r = client.generate(req(model=model, strength=1.0), Image.rgba(SIZE, SIZE, base.tobytes()),
                        Image.gray(SIZE, SIZE, mask.tobytes()))
    assert r.images and r.images[0].image.width <= SIZE


def test_unsupported_feature_names_the_field(client):
    flux = next(m["id"] for m in client.welcome["models"] if m["family"] == "flux")
    with pytest.raises(JobFailed) as err:
        client.generate(req(model=flux, negative_prompt="blurry"))
    assert err.value.field == "negative_prompt" and "FLUX.1" in str(err.value)
    with pytest.raises(JobFailed) as err:
        client.generate(req(model=flux, scheduler="ddim"))
    assert err.value.field == "scheduler"


def test_cli_generate_three_uses(served, tiny_sd3_path, tmp_path):
    from easel.cli import main

    sketch = tmp_path / "sketch.png"
    PILImage.fromarray(canvas()[..., :3]).save(sketch)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[8:40, 8:40] = 255
    PILImage.fromarray(mask, "L").save(tmp_path / "mask.png")
    common = ["generate", "--url", served[0], "--prompt", "a red circle", "--steps", "2", "--quiet", "--exact-size"]
    for model in ("tiny-flux-dev", "tiny-sd3"):
        assert main([*common, "--model", model, "--width", "64", "--height", "64",
                     "--out", str(tmp_path / f"{model}-t.png")]) == 0
        assert main([*common, "--model", model, "--image", str(sketch), "--strength", "0.6",
                     "--out", str(tmp_path / f"{model}-i.png")]) == 0
        assert main([*common, "--model", model, "--image", str(sketch), "--mask", str(tmp_path / "mask.png"),
                     "--out", str(tmp_path / f"{model}-m.png")]) == 0
        for kind in "tim":
            assert PILImage.open(tmp_path / f"{model}-{kind}.png").size == (SIZE, SIZE)
    assert main([*common, "--model", "tiny-flux-dev", "--negative", "blurry",
                 "--out", str(tmp_path / "x.png")]) == 2
