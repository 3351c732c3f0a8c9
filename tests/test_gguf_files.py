"""GGUF-quantised FLUX.1 transformer files (tiny model): served as 'FILE.gguf#config=FOLDER', unquantised F32
tensors give the folder model's exact pixels, Q8_0 ones stay quantised and come close; the model library
recognises them from their headers (original or diffusers names), serves one with a config folder beside it,
says what to add to one without, skips other GGUF models and reports a cut-short file; a real ``easel serve
--models-dir`` offers one to ``easel generate`` and refuses the one without a config in one line."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from easel.server.engine import Engine
from helpers.cli_runs import easel
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


def test_the_library_lists_and_serves_gguf_transformers(gguf_files, tmp_path):
    from easel.server.library.scan import Library

    f32, q8, config = gguf_files
    shutil.copy(q8, tmp_path / "lib-flux-Q8_0.gguf")
    shutil.copytree(config, tmp_path / "lib-flux-Q8_0")  # its sibling config folder
    small = {"double_blocks.0.img_mod.lin.weight": torch.ones(192, 32), "single_blocks.0.modulation.lin.weight":
             torch.ones(96, 32), "img_in.bias": torch.zeros(32)}  # original (BFL) names, as city96's files
    write_gguf(small, tmp_path / "flux1-dev-Q8_0.gguf", quantise=True)
    write_gguf({"blk.0.attn_q.weight": torch.ones(32, 32)}, tmp_path / "llm.gguf", arch="llama")
    with open(q8, "rb") as f:
        (tmp_path / "cut.gguf").write_bytes(f.read(2000))
    entries = {e.id: e for e in Library([tmp_path]).scan()}
    assert "llm" not in entries  # another tool's model: skipped
    served, original, cut = entries["lib-flux-Q8_0"], entries["flux1-dev-Q8_0"], entries["cut"]
    assert (served.kind, served.desc.family, served.problem) == ("checkpoint", "flux", None)
    assert served.desc.label == "FLUX.1 transformer (GGUF Q8_0)" and served.config == str(tmp_path / "lib-flux-Q8_0")
    assert original.desc.label == "FLUX.1 transformer (GGUF Q8_0)"
    assert "put a diffusers folder of the same model beside it, named flux1-dev-Q8_0/" in original.problem
    assert cut.kind == "unknown" and "cut short" in cut.problem
    with Engine([f"{q8}#config={config}"], models_dir=tmp_path, device="cpu", dtype="float32") as eng:
        assert eng.model_info("lib-flux-Q8_0").family == "flux"
        (from_library,) = run(eng, job(model="lib-flux-Q8_0", seeds=[2], negative_prompt=""))
        (named,) = run(eng, job(model="flux1-tiny-Q8_0", seeds=[2], negative_prompt=""))
    assert np.array_equal(arr(from_library), arr(named))


def test_a_gguf_without_a_config_says_what_to_add(gguf_files):
    from easel.server.engine.types import EngineError

    f32, _, _ = gguf_files
    with Engine([f32], device="cpu", dtype="float32") as eng, pytest.raises(EngineError) as err:
        run(eng, job(model="flux1-tiny-F32", negative_prompt=""))
    assert err.value.field == "model" and "a FLUX.1 transformer (GGUF F32); serve it as 'FILE#config=FOLDER'" \
        in str(err.value)


def test_easel_serve_offers_a_gguf_of_its_models_folder(gguf_files, tmp_path):
    from PIL import Image

    from easel.client.connection import Client
    from helpers.server_harness import running_server

    _, q8, config = gguf_files
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(q8, models / "flux1-tiny-Q8_0.gguf")
    shutil.copytree(config, models / "flux1-tiny-Q8_0")
    shutil.copy(q8, models / "no-config-Q8_0.gguf")
    with running_server([], "--models-dir", str(models), "--no-preload", "--device", "cpu",
                        env={"EASEL_CONFIG": "/nonexistent"}) as url:
        with Client(url) as client:
            families = {m["id"]: m["family"] for m in client.welcome["models"]}
        assert families["flux1-tiny-Q8_0"] == "flux"
        out = tmp_path / "out.png"
        r = easel("generate", "--url", url, "--model", "flux1-tiny-Q8_0", "--prompt", "a red square", "--seed", "2",
                  "--steps", "2", "--width", "64", "--height", "64", "--quiet", "--out", str(out))
        assert r.returncode == 0, r.stderr
        picture = np.asarray(Image.open(out).convert("RGB"), dtype=np.int16)
        assert picture.shape == (64, 64, 3) and picture.std() > 1
        r = easel("generate", "--url", url, "--model", "no-config-Q8_0", "--prompt", "x", "--steps", "2", "--quiet",
                  "--out", str(tmp_path / "no.png"))
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert ("a FLUX.1 transformer (GGUF Q8_0) needs the text encoders and VAE of a FLUX.1 base folder: put a "
            "diffusers folder of the same model beside it") in r.stderr
