"""Power features on SD 3/3.5 and FLUX.1 (tiny models): which ones each model supports (and the clear
error for the others), LoRAs, dtype and offload in the model info, SD3 without its T5 encoder,
SD3 transformer single files with a config folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from easel.server.engine import Engine, EngineError
from helpers.engine_checks import arr, assert_close, raw_call, run
from helpers.engine_jobs import SIZE, job

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def loras(tiny_sd3_path, tiny_flux_path, tmp_path_factory):
    from helpers.tiny_flow_models import write_tiny_flow_lora

    folder = tmp_path_factory.mktemp("flow_loras")
    write_tiny_flow_lora(tiny_sd3_path, folder / "sd3-ink.safetensors")
    write_tiny_flow_lora(tiny_flux_path, folder / "flux-ink.safetensors")
    return folder


@pytest.fixture(scope="module")
def engine(tiny_sd3_path, tiny_flux_path, tiny_sd_path, loras):
    with Engine([tiny_sd3_path, tiny_flux_path, tiny_sd_path], device="cpu", dtype="float32",
                loras_dir=loras) as eng:
        yield eng


def test_model_info_lists_features_dtype_and_offload(engine, tiny_sd3_path, tiny_flux_path, tiny_sd_path):
    info = {i.family: i for i in engine.models()}
    assert info["sd1"].features == ["negative_prompt", "scheduler", "loras", "control_model", "variation_seed",
                                  "regions"]
    assert info["sd3"].features == ["negative_prompt", "loras", "variation_seed"]
    assert info["flux"].features == ["loras", "variation_seed"]
    d = info["flux"].to_dict()
    assert d["features"] == ["loras", "variation_seed"] and d["dtype"] == "float32" and d["offload"] == "none"


@pytest.mark.parametrize(("family", "field", "kw"), [
    ("flux", "negative_prompt", {"negative_prompt": "blurry"}),
    ("flux", "scheduler", {"scheduler": "dpmpp_2m", "negative_prompt": ""}),
    ("sd3", "control_model", {"control_model": "sketch"}),
    ("sd3", "refiner", {"refiner": True}),
    ("flux", "refiner", {"refiner": True, "negative_prompt": ""}),
])
def test_unsupported_feature_is_a_clear_error(engine, tiny_sd3_path, tiny_flux_path, family, field, kw):
    model = {"sd3": tiny_sd3_path, "flux": tiny_flux_path}[family]
    with pytest.raises(EngineError) as err:
        run(engine, job(model=model, **kw))
    assert err.value.field == field and err.value.code == "unsupported_feature"
    assert field in str(err.value) and family in str(err.value)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_lora_changes_the_result_and_is_removed_afterwards(engine, tiny_sd3_path, tiny_flux_path, family):
    model = {"sd3": tiny_sd3_path, "flux": tiny_flux_path}[family]
    neg = "blurry" if family == "sd3" else ""
    name = f"{family}-ink.safetensors"
    info = {i.family: i for i in engine.models()}[family]
    assert name in (info.loras or [])
    (plain,) = run(engine, job(model=model, negative_prompt=neg))
    (with_lora,) = run(engine, job(model=model, negative_prompt=neg, loras=[(name, 1.0)]))
    (again,) = run(engine, job(model=model, negative_prompt=neg))
    assert np.abs(arr(plain) - arr(with_lora)).max() > 2
    assert np.array_equal(arr(plain), arr(again))
    assert with_lora.info["easel"]["features"]["loras"] == [{"name": name, "weight": 1.0}]


def test_sd3_without_t5_matches_raw_diffusers(tiny_sd3_path):
    from diffusers import StableDiffusion3Pipeline

    with Engine([tiny_sd3_path], device="cpu", dtype="float32", sd3_t5=False) as eng:
        (img,) = run(eng, job(seeds=[4]))
        assert eng.pipeline(None).text_encoder_3 is None
    raw = StableDiffusion3Pipeline.from_pretrained(tiny_sd3_path, text_encoder_3=None, tokenizer_3=None,
                                                   dtype=torch.float32)
    raw.set_progress_bar_config(disable=True)
    assert img.size == (SIZE, SIZE)
    assert_close(img, raw_call(raw, job(seeds=[4], guidance=7.0), 4))


def test_offload_modes_are_checked():
    from easel.server.engine.loading import LoadOptions

    cuda = {"device": "cuda", "dtype_requested": "auto", "dtype_default": "float16"}
    assert LoadOptions(**cuda, cpu_offload=True).offload_mode == "model"
    assert LoadOptions(**cuda, cpu_offload="sequential").offload_mode == "sequential"
    with pytest.raises(EngineError) as err:
        LoadOptions(**cuda, cpu_offload="layers")
    assert err.value.field == "offload"


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_bfloat16_on_the_cpu(tiny_sd3_path, tiny_flux_path, family):
    model = {"sd3": tiny_sd3_path, "flux": tiny_flux_path}[family]
    with Engine([model], device="cpu", dtype="bfloat16") as eng:
        (img,) = run(eng, job(model=None, negative_prompt="" if family == "flux" else "blurry", steps=2))
        assert eng.model_info(None).dtype == "bfloat16"
        assert eng.pipeline(None).transformer.dtype == torch.bfloat16
    assert img.size == (SIZE, SIZE) and np.asarray(img).std() > 0


def test_config_file_selects_the_offload_mode(tmp_path):
    from easel.server.settings import SettingsError, read_file

    config = tmp_path / "easel.toml"
    config.write_text('cpu_offload = "sequential"\n')
    assert read_file(config)["cpu_offload"] == "sequential"
    config.write_text("cpu_offload = true\n")
    assert read_file(config)["cpu_offload"] is True
    config.write_text('cpu_offload = "layers"\n')
    with pytest.raises(SettingsError) as err:
        read_file(config)
    assert "cpu_offload" in str(err.value) and "sequential" in str(err.value)


def test_sd3_transformer_single_file_with_a_config_folder(tiny_sd3_path, tmp_path):
    """An original-layout SD3 transformer file (as downloaded) plus a diffusers folder for the rest,
    whose transformer weights may be missing: the same pixels as the folder model."""
    import os
    import shutil

    from helpers.tiny_flow_models import write_sd3_transformer_file

    file = write_sd3_transformer_file(tiny_sd3_path, tmp_path / "sd3.5_tiny.safetensors")
    from diffusers import SD3Transformer2DModel
    from safetensors.torch import save_file

    weights = SD3Transformer2DModel.from_pretrained(tiny_sd3_path, subfolder="transformer").state_dict()
    diffusers_layout = tmp_path / "sd3.5_tiny_diffusers.safetensors"
    save_file({k: v.contiguous() for k, v in weights.items()}, diffusers_layout)
    config = shutil.copytree(tiny_sd3_path, tmp_path / "sd3-config")
    for name in os.listdir(config / "transformer"):
        if name.endswith(".safetensors"):
            os.remove(config / "transformer" / name)
    refs = [f"{file}#config={config}", f"{diffusers_layout}#config={config}", tiny_sd3_path]
    with Engine(refs, device="cpu", dtype="float32") as eng:
        single, other_layout, folder = (m.id for m in eng.models())
        (same,) = run(eng, job(model=other_layout, seeds=[2], guidance=5.0))
        (reference,) = run(eng, job(model=folder, seeds=[2], guidance=5.0))
        assert np.array_equal(arr(same), arr(reference))
        assert eng.model_info(single).family == "sd3" and eng.model_info(single).source == "single_file"
        assert eng.model_info(single).default_guidance == 3.5  # "sd3.5" in its name: SD 3.5 large's defaults
        from_file = run(eng, job("img2img", model=single, seeds=[2, 3], steps=2, guidance=5.0))
        from_folder = run(eng, job("img2img", model=folder, seeds=[2, 3], steps=2, guidance=5.0))
    assert len(from_file) == 2
    for a, b in zip(from_file, from_folder):
        assert np.array_equal(arr(a), arr(b))


def test_serve_flags_for_offload_and_t5(capsys):
    from easel.cli import main

    assert main(["serve", "--print-config", "--cpu-offload", "sequential", "--no-sd3-t5"]) == 0
    out = capsys.readouterr().out
    assert 'cpu_offload = "sequential"  # flag' in out and "sd3_t5 = false  # flag" in out
    assert main(["serve", "--print-config", "--cpu-offload"]) == 0
    out = capsys.readouterr().out
    assert 'cpu_offload = "model"' in out and "sd3_t5 = true  # default" in out
