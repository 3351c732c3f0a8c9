"""The speed options (engine/speed.py, docs/performance.md): channels_last and torch.compile on tiny models.

Pixels are compared with raw diffusers in the same dtype: with the layout off they must be identical, with it
on they may move within the tolerance docs/performance.md states (the convolutions sum in another order).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from easel.server.engine import Engine, EngineError, EngineJob
from easel.server.settings import SettingsError, read_file
from helpers.engine_checks import arr, gradient, raw_call, run

SIZE = 64
#: the documented tolerance for a speed option's pixels against raw diffusers, in 8-bit steps
MEAN_TOLERANCE, MAX_TOLERANCE = 2.0, 64


def job(mode: str = "txt2img", **kw) -> EngineJob:
    return EngineJob(mode=mode, prompt="a red circle", negative_prompt="", width=SIZE, height=SIZE, steps=3,
                     guidance=5.0, seeds=[11], image=gradient(SIZE) if mode != "txt2img" else None,
                     strength=0.6, **kw)


def raw_bf16(path: str, j: EngineJob) -> np.ndarray:
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image

    pipe = AutoPipelineForText2Image.from_pretrained(path, dtype=torch.bfloat16)
    if j.mode == "img2img":
        pipe = AutoPipelineForImage2Image.from_pipe(pipe)
    pipe.set_progress_bar_config(disable=True)
    return arr(raw_call(pipe, j, j.seeds[0]))


def conv_weight(engine: Engine) -> torch.Tensor:
    return engine.pipeline(None).unet.conv_in.weight


@pytest.mark.parametrize("mode", ["txt2img", "img2img"])
def test_channels_last_auto_in_bf16_on_the_cpu_within_tolerance(tiny_sd_path, mode):
    j = job(mode)
    ref = raw_bf16(tiny_sd_path, j)
    results = {}
    for choice in ("auto", "off"):
        with Engine([tiny_sd_path], device="cpu", dtype="bfloat16", channels_last=choice) as eng:
            (img,) = run(eng, j)
            layout = conv_weight(eng).is_contiguous(memory_format=torch.channels_last)
            vae_layout = eng.pipeline(None).vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
            results[choice] = (arr(img), layout and vae_layout)
    assert results["auto"][1] and not results["off"][1]
    assert np.array_equal(results["off"][0], ref), "with the layout off, Easel's pixels are raw diffusers'"
    diff = np.abs(results["auto"][0] - ref)
    assert diff.mean() <= MEAN_TOLERANCE and diff.max() <= MAX_TOLERANCE, (diff.mean(), diff.max())


def test_channels_last_auto_is_off_in_float32_and_on_when_asked(tiny_sd_path):
    with Engine([tiny_sd_path], device="cpu", dtype="float32") as eng:
        eng.load(None)
        assert conv_weight(eng).is_contiguous()
    with Engine([tiny_sd_path], device="cpu", dtype="float32", channels_last="on") as eng:
        (img,) = run(eng, job())
        assert conv_weight(eng).is_contiguous(memory_format=torch.channels_last)
        assert img.size == (SIZE, SIZE)


def test_unknown_channels_last_choice_names_the_field(tiny_sd_path, tmp_path):
    with pytest.raises(EngineError) as err:
        Engine([tiny_sd_path], device="cpu", channels_last="sideways")
    assert err.value.field == "channels_last" and "auto, on, off" in str(err.value)
    config = tmp_path / "config.toml"
    config.write_text('channels_last = "sideways"\n')
    with pytest.raises(SettingsError, match="channels_last.*auto, on, off"):
        read_file(config)


def test_compile_says_so_on_the_first_job_per_size_and_keeps_pixels(tiny_sd_path):
    j = job()
    with Engine([tiny_sd_path], device="cpu", dtype="float32", channels_last="off") as plain:
        (ref,) = run(plain, j)
    with Engine([tiny_sd_path], device="cpu", dtype="float32", channels_last="off", compile=True) as eng:
        first: list = []
        (img,) = run(eng, j, first)
        again: list = []
        (img2,) = run(eng, j, again)
        unet = eng.pipeline(None).unet
    compiling = [p.message for p in first if "compiling" in p.message]
    assert compiling and "64×64" in compiling[0]
    assert not any("compiling" in p.message for p in again), "the same size compiles once"
    assert unet._compiled_call_impl is not None, "the UNet runs compiled"
    for got in (img, img2):
        diff = np.abs(arr(got) - arr(ref))
        assert diff.mean() <= MEAN_TOLERANCE and diff.max() <= MAX_TOLERANCE, (diff.mean(), diff.max())
