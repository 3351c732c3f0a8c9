"""FLUX.1 Fill (an inpainting model, FluxFillPipeline) on a tiny random-weight pipeline: recognised as FLUX.1
with the inpaint model flag (configs and names), the model card's defaults, every mode against raw
FluxFillPipeline (text to image and image to image as a fill of the whole picture), the selection path
keeping the pixels outside the blend, and its transformer as a single file with a config folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from easel.client.protocol import GenerateRequest
from easel.server.engine import Engine
from easel.server.generation import run_generation
from easel.server.imaging.compose import LayerResult, flatten
from easel.server.imaging.masks import composite_mask
from easel.server.traits import detect, guess
from easel.server.work import Inputs
from helpers.engine_checks import assert_close, raw_call, run
from helpers.engine_jobs import SIZE, job
from helpers.pictures import box_mask, texture

torch.set_num_threads(1)  # 2 shared cores


@pytest.fixture(scope="module")
def fill_path(tmp_path_factory) -> str:
    from helpers.tiny_flow_models import build_tiny_flux

    return build_tiny_flux(tmp_path_factory.mktemp("tiny_models") / "tiny-flux-fill", fill=True)


@pytest.fixture(scope="module")
def engine(fill_path):
    with Engine([fill_path], device="cpu", dtype="float32") as eng:
        yield eng


@pytest.fixture(scope="module")
def raw(fill_path):
    import diffusers

    pipe = diffusers.FluxFillPipeline.from_pretrained(fill_path, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_recognised_as_flux_inpainting_model_with_the_model_cards_defaults(engine, fill_path):
    info = engine.model_info(None)
    assert (info.family, info.default_steps, info.default_guidance) == ("flux", 50, 30.0)
    assert info.inpaint
    assert engine.pipeline(None, "txt2img").transformer.config.in_channels == 384
    assert type(engine.pipeline(None, "img2img")).__name__ == "FluxFillPipeline"
    # by name alone (a hub id before its download), and by model_index + transformer config
    named = guess("black-forest-labs/FLUX.1-Fill-dev")
    assert (named.family, named.inpaint_unet, named.default_steps, named.default_guidance) == ("flux", True, 50, 30.0)
    by_config = detect("x", {"_class_name": "FluxFillPipeline"}, {"in_channels": 384}, None, None)
    assert by_config.family == "flux" and by_config.inpaint_unet
    plain = detect("x", {"_class_name": "FluxPipeline"}, {"in_channels": 64}, None, None)
    assert not plain.inpaint_unet and plain.default_steps == 28


@pytest.mark.parametrize("mode", ["txt2img", "img2img", "inpaint"])
def test_every_mode_equals_raw_flux_fill(engine, raw, mode):
    j = job(mode, seeds=[3], steps=2, negative_prompt="", guidance=30.0, strength=0.8 if mode == "img2img" else 1.0)
    (img,) = run(engine, j)
    size = (SIZE, SIZE)
    if mode == "inpaint":
        expected = raw_call(raw, j, 3)
    else:  # the whole picture filled: a grey one for text to image (strength 1: pure noise)
        image = j.image if j.image is not None else Image.new("RGB", size, (127, 127, 127))
        expected = raw(prompt=j.prompt, image=image, mask_image=Image.new("L", size, 255), strength=j.strength,
                       num_inference_steps=2, guidance_scale=30.0, height=SIZE, width=SIZE,
                       generator=torch.Generator("cpu").manual_seed(3)).images[0]
    assert_close(img, expected)


@pytest.mark.parametrize("mode", ["fill", "remove"])
def test_selection_keeps_the_pixels_outside_the_blend(engine, mode):
    image, mask = texture(96, 80, seed=2), box_mask(96, 80, (30, 20, 30, 30))
    request = GenerateRequest(job="j", preview=False, prompt="a red circle", steps=2, seed=5, inpaint_mode=mode)
    out = run_generation(engine, request, Inputs("inpaint", image, mask), engine.model_info(None),
                         lambda p: None, lambda: False)
    p = out.parameters
    assert p["inpaint_mode"] == mode and p["guidance"] == 30.0
    layer = out.layers[0]
    flat = flatten(image, LayerResult(layer.rgba, layer.x, layer.y))
    cmask = composite_mask(mask, p["feather"])
    assert np.array_equal(flat[cmask == 0], image[cmask == 0])
    assert not np.array_equal(flat[mask == 255], image[mask == 255])


def test_transformer_file_with_its_config_folder(engine, fill_path, tmp_path):
    """A FLUX.1 Fill transformer file served as 'FILE#config=FOLDER' takes FLUX.1's transformer path: the folder's pixels."""
    from diffusers import FluxTransformer2DModel
    from safetensors.torch import save_file

    weights = FluxTransformer2DModel.from_pretrained(fill_path, subfolder="transformer").state_dict()
    save_file({k: v.contiguous() for k, v in weights.items()}, tmp_path / "fill.safetensors")
    j = job("inpaint", steps=2, negative_prompt="")
    with Engine([f"{tmp_path / 'fill.safetensors'}#config={fill_path}"], device="cpu", dtype="float32") as eng:
        assert eng.model_info(None).inpaint
        (img,) = run(eng, j)
    (expected,) = run(engine, j)
    assert np.array_equal(np.asarray(img), np.asarray(expected))
