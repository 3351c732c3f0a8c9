"""GGUF-quantised FLUX.1 transformer files served as 'FILE.gguf#config=FOLDER' (tiny model): unquantised
F32 tensors give the folder model's exact pixels, Q8_0 ones stay quantised and come close."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from easel.server.engine import Engine
from helpers.engine_checks import arr, run
from helpers.engine_jobs import job
from helpers.tiny_gguf import write_gguf

torch.set_num_threads(1)
pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def gguf_files(tiny_flux_path, tmp_path_factory):
    """(F32 file, Q8_0 file, config folder without transformer weights) of the tiny FLUX.1 model.
    The tensors keep diffusers' names: diffusers' FLUX.1 converter of original names assumes the real
    width (3072), which no tiny file has."""
    from diffusers import FluxTransformer2DModel

    tmp = tmp_path_factory.mktemp("gguf")
    state = FluxTransformer2DModel.from_pretrained(tiny_flux_path, subfolder="transformer").state_dict()
    f32 = write_gguf(state, tmp / "flux1-tiny-F32.gguf")
    q8 = write_gguf(state, tmp / "flux1-tiny-Q8_0.gguf", quantise=True)
    config = shutil.copytree(tiny_flux_path, tmp / "flux-config")
    for name in os.listdir(config / "transformer"):
        if name.endswith(".safetensors"):
            os.remove(config / "transformer" / name)
    return f32, q8, config


def test_gguf_transformer_with_a_config_folder(gguf_files, tiny_flux_path):
    f32, q8, config = gguf_files
    with Engine([f"{f32}#config={config}", f"{q8}#config={config}", tiny_flux_path],
                device="cpu", dtype="float32") as eng:
        plain, quantised, folder = (m.id for m in eng.models())
        assert eng.model_info(quantised).family == "flux" and eng.model_info(quantised).source == "single_file"
        (reference,) = run(eng, job(model=folder, seeds=[2], negative_prompt=""))
        (same,) = run(eng, job(model=plain, seeds=[2], negative_prompt=""))
        (close,) = run(eng, job(model=quantised, seeds=[2], negative_prompt=""))
        weight = eng.pipeline(quantised).transformer.transformer_blocks[0].attn.to_q.weight
        assert type(weight).__name__ == "GGUFParameter" and weight.dtype == torch.uint8  # kept quantised
    assert np.array_equal(arr(same), arr(reference))
    diff = np.abs(arr(close).astype(int) - arr(reference).astype(int))
    # Q8_0 keeps each block of 32 weights as int8 with one fp16 scale: an error of at most 1/254 of the block's
    # largest weight. Measured on this model: at most 1 step of 255, mean 0.1; 2 leaves a step for rounding.
    assert 0 < diff.mean() < 0.5 and diff.max() <= 2


def test_without_the_gguf_package_the_error_names_it(monkeypatch):
    import diffusers.utils

    from easel.server.engine import flow
    from easel.server.engine.types import EngineError

    monkeypatch.setattr(diffusers.utils, "is_gguf_available", lambda: False)
    with pytest.raises(EngineError) as err:
        flow.gguf_config(torch.float32)
    assert err.value.field == "model" and "pip install gguf" in str(err.value)
