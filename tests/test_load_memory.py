"""A model that does not fit: its load fails with ``out_of_memory`` and a message naming its weights' GB at the dtype
it loads in (counted from the safetensors headers), the device's memory and the fixes; the server goes on serving.

A machine too small for a model cannot be made here, so the pipeline's ``from_pretrained`` is made to raise what
the CPU allocator raises when memory runs out (PyTorch's DefaultCPUAllocator RuntimeError): everything around it,
the weight count, the message, the protocol error and the next job, is real."""

from __future__ import annotations

import glob
import math
import os

import pytest
from diffusers import DiffusionPipeline
from safetensors import safe_open

from easel.client.connection import Client, JobFailed, new_job_id
from easel.client.protocol import GenerateRequest
from easel.server.engine import Engine
from easel.server.engine.oom import is_out_of_memory
from helpers.server_harness import inprocess_server

ALLOCATOR = ("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to "
             "allocate 4294967296 bytes. Error code 12 (Cannot allocate memory)")


def float32_bytes(folder: str) -> int:
    """The folder's weights at 4 bytes a value, counted with safetensors' own reader."""
    total = 0
    for path in glob.glob(os.path.join(folder, "*", "*.safetensors")):
        with safe_open(path, "pt") as f:
            total += sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())
    return total * 4


@pytest.fixture
def too_big(monkeypatch, tiny_flux_path):
    """Loading the tiny FLUX.1 folder raises the allocator's error; other folders load as usual."""
    original = DiffusionPipeline.from_pretrained.__func__

    def from_pretrained(cls, path, *args, **kwargs):
        if os.path.samefile(path, tiny_flux_path):
            raise RuntimeError(ALLOCATOR)
        return original(cls, path, *args, **kwargs)

    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", classmethod(from_pretrained))
    return tiny_flux_path


def test_allocator_errors_are_out_of_memory():
    assert is_out_of_memory(RuntimeError(ALLOCATOR)) and is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("size mismatch for weight"))


def test_the_message_names_the_weights_gb_and_the_fixes_and_the_server_goes_on(too_big, tiny_sd_path):
    engine = Engine([too_big, tiny_sd_path], device="cpu", dtype="float32")
    with inprocess_server(engine) as (url, _app), Client(url) as client:
        ids = {m["family"]: m["id"] for m in client.welcome["models"]}
        with pytest.raises(JobFailed) as err:
            client.generate(GenerateRequest(job=new_job_id(), prompt="a cat", model=ids["flux"], steps=1, seed=1,
                                            width=64, height=64, exact_size=True))
        message = str(err.value)
        assert err.value.code == "out_of_memory" and err.value.field == "model"
        assert f"needs {float32_bytes(too_big) / 1e9:.3g} GB for its weights in float32" in message
        assert "this machine has" in message and "GB free" in message
        for fix in ("--cpu-offload", "--dtype bfloat16", "GGUF", "docs/models.md"):
            assert fix in message
        assert "Traceback" not in message and "\n" not in message
        r = client.generate(GenerateRequest(job=new_job_id(), prompt="a cat", model=ids["sd1"], steps=1, seed=1,
                                            width=64, height=64, exact_size=True))
        assert (r.images[0].image.width, r.images[0].image.height) == (64, 64)
