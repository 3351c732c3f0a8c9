"""Failures inside a job end that job with a clear error; the server keeps serving.

Out-of-memory and NaN cannot be provoked on purpose with tiny models on this CPU-only machine,
so these tests inject them with a forward hook on the real UNet (a stand-in for a CUDA OOM or a
float16 overflow on a GPU). Everything else — engine, pipelines, server, client — is real.
"""

from __future__ import annotations

import pytest
import torch

from easel.client.connection import Client, JobFailed, new_job_id
from easel.client.protocol import GenerateRequest
from easel.server.engine import Engine
from helpers.server_harness import inprocess_server


@pytest.fixture
def served(tiny_sd_path):
    engine = Engine([str(tiny_sd_path)], device="cpu", dtype="float32")
    with inprocess_server(engine) as (url, app):
        yield url, engine


def req(**kw) -> GenerateRequest:
    return GenerateRequest(job=new_job_id(), prompt="a red circle", steps=2, seed=1, **kw)


def _hook(engine: Engine, fn):
    return engine.pipeline(None).unet.register_forward_hook(fn)


def test_out_of_memory_retries_once_with_memory_savers(served):
    url, engine = served
    calls = {"n": 0}

    def oom_once(module, args, output):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return output

    handle = _hook(engine, oom_once)
    try:
        messages = []
        with Client(url) as c:
            result = c.generate(req(), on_progress=lambda p: messages.append(p.message))
        assert len(result.images) == 1
        assert any("retrying with attention slicing, VAE tiling" in m for m in messages)
        assert engine.pipeline(None).vae.use_tiling  # the savers stay on for this model
    finally:
        handle.remove()


def _fails_then_recovers(served, hook, code: str, words: str) -> None:
    """With ``hook`` on the engine's UNet a job fails with ``code`` (its message says ``words``);
    with the hook removed the same server makes a picture again."""
    url, engine = served
    handle = _hook(engine, hook)
    try:
        with Client(url) as c, pytest.raises(JobFailed) as err:
            c.generate(req())
        assert err.value.code == code and words in str(err.value)
    finally:
        handle.remove()
    with Client(url) as c:
        assert len(c.generate(req()).images) == 1


def test_out_of_memory_twice_is_a_clear_error_and_the_server_goes_on(served):
    def always_oom(module, args, output):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    _fails_then_recovers(served, always_oom, "out_of_memory", "smaller size")


def test_nan_image_is_an_error(served):
    def nan_output(module, args, output):
        return (output[0] * float("nan"), *output[1:]) if isinstance(output, tuple) else output

    _fails_then_recovers(served, nan_output, "nan", "float32")


def test_model_that_fails_to_load_is_an_error(tmp_path, tiny_sd_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    engine = Engine([str(tiny_sd_path), str(broken)], device="cpu", dtype="float32")
    with inprocess_server(engine) as (url, app), Client(url) as c:
        with pytest.raises(JobFailed) as err:
            c.generate(req(model="broken"))
        assert err.value.code == "model_load_failed" and err.value.field == "model"
        assert len(c.generate(req()).images) == 1
