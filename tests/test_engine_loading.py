"""Engine model loading: folders, single-file checkpoints, references and their errors, families and
defaults, device/dtype rules, previews and built-in models (hub ids: test_engine_hub.py)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from easel.server.engine import Engine, EngineError, Progress
from easel.server.engine.device import SMALL_MODEL_BYTES, model_dtype, resolve_device, resolve_dtype
from easel.server.engine.preview import LatentPreview
from easel.server.engine.refs import parse_ref
from easel.server.traits import detect, guess
from helpers.loading_checks import generate, job

torch.set_num_threads(1)
# ----------------------------------------------------------------------------- single files


def test_single_file_with_config_matches_folder(tiny_sd_path, tiny_sd_single_file, folder_result):
    with Engine([f"{tiny_sd_single_file}#config={tiny_sd_path}"], device="cpu", dtype="float32") as eng:
        info = eng.model_info(None)
        assert (info.id, info.source, info.family) == ("tiny-sd-file", "single_file", "sd1")
        assert eng.model_info(f"{tiny_sd_single_file}#config={tiny_sd_path}").id == "tiny-sd-file"  # alias
        assert np.array_equal(generate(eng), folder_result)
        from diffusers import UNet2DConditionModel

        want = UNet2DConditionModel.from_pretrained(tiny_sd_path, subfolder="unet").state_dict()
        got = eng.pipeline(None).unet.state_dict()
        assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def test_single_file_sibling_config_without_weights(tiny_sd_path, tiny_sd_single_file, tmp_path, folder_result):
    from helpers.tiny_models import config_only_copy

    config_only_copy(tiny_sd_path, tmp_path / "mymodel")
    shutil.copy(tiny_sd_single_file, tmp_path / "mymodel.safetensors")
    assert parse_ref(str(tmp_path / "mymodel.safetensors")).config == str(tmp_path / "mymodel")
    with Engine(["mymodel.safetensors"], device="cpu", dtype="float32", models_dir=str(tmp_path)) as eng:
        assert eng.model_info(None).id == "mymodel"
        assert np.array_equal(generate(eng), folder_result)


def test_sdxl_single_file_matches_folder(tiny_sdxl_path, tmp_path):
    from helpers.tiny_models import write_single_file

    file = write_single_file(tiny_sdxl_path, tmp_path / "xl.safetensors")
    with Engine([tiny_sdxl_path, f"{file}#config={tiny_sdxl_path}"], device="cpu", dtype="float32") as eng:
        folder_id, file_id = (m.id for m in eng.models())
        assert eng.model_info(file_id).family == "sdxl"
        assert np.array_equal(generate(eng, model=file_id), generate(eng, model=folder_id))


def test_single_file_without_config_offline_explains(tiny_sd_single_file, hub_cache):
    with Engine([tiny_sd_single_file], device="cpu") as eng:
        with pytest.raises(EngineError) as err:
            eng.load(None)
    assert err.value.field == "model" and "#config=" in str(err.value)


# ----------------------------------------------------------------------------- references and errors


def test_unknown_model_names_the_served_ones(tiny_sd_path):
    eng = Engine([tiny_sd_path, "easel-demo"], device="cpu")
    assert [m.id for m in eng.models()] == ["tiny-sd", "easel-demo"]
    assert eng.model_info(None).id == "tiny-sd" and eng.model_info(tiny_sd_path).id == "tiny-sd"
    with pytest.raises(EngineError) as err:
        eng.model_info("sd-xl-base")
    assert err.value.field == "model" and err.value.code == "unknown_model"
    assert "tiny-sd" in str(err.value) and "easel-demo" in str(err.value)
    with pytest.raises(EngineError):
        eng.run(job(model="nope"), lambda p: None, lambda: False)


def test_duplicate_ids_are_made_unique(tiny_sd_path, tmp_path):
    other = shutil.copytree(tiny_sd_path, tmp_path / "tiny-sd")
    eng = Engine([tiny_sd_path, str(other)], device="cpu")
    assert [m.id for m in eng.models()] == ["tiny-sd", "tiny-sd-2"]


@pytest.mark.parametrize("ref, words", [
    ("/no/such/model.safetensors", "no such file"),
    ("./missing-folder", "no such file"),
    ("", "empty"),
])
def test_bad_references(ref, words):
    with pytest.raises(EngineError) as err:
        Engine([ref], device="cpu")
    assert err.value.field == "model" and words in str(err.value)


def test_bad_files_and_folders(tmp_path, tiny_sd_single_file):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hi")
    cases = [(str(tmp_path / "empty"), "model_index.json"), (str(tmp_path / "notes.txt"), ".safetensors"),
             (f"{tiny_sd_single_file}#cfg=x", "#config="), (f"{tiny_sd_single_file}#config={tmp_path}", "model_index")]
    for ref, words in cases:
        with pytest.raises(EngineError) as err:
            Engine([ref], device="cpu")
        assert words in str(err.value), ref


def test_unsupported_pipeline_fails_at_start(tmp_path):
    (tmp_path / "kandinsky").mkdir()
    (tmp_path / "kandinsky" / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyV22Pipeline"}))
    with pytest.raises(EngineError) as err:
        Engine([str(tmp_path / "kandinsky")], device="cpu")
    assert "KandinskyV22Pipeline" in str(err.value) and "FLUX.1" in str(err.value)


def test_broken_model_fails_cleanly_and_others_still_work(tiny_sd_path, tmp_path):
    broken = shutil.copytree(tiny_sd_path, tmp_path / "broken")
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    with Engine([str(broken), tiny_sd_path], device="cpu", dtype="float32") as eng:
        with pytest.raises(EngineError) as err:
            generate(eng, model="broken")
        assert err.value.code == "model_load_failed" and "complete diffusers folder" in str(err.value)
        assert generate(eng, model="tiny-sd").shape == (64, 64, 3)


def test_engine_arguments():
    with pytest.raises(EngineError):
        Engine([], device="cpu")
    with pytest.raises(EngineError) as err:
        Engine(["easel-demo"], device="cpu", max_loaded=0)
    assert err.value.field == "max_loaded"
    with pytest.raises(EngineError) as err:
        Engine(["easel-demo"], dtype="float8")
    assert err.value.field == "dtype"


# ----------------------------------------------------------------------------- families and defaults


def _configs(cross: int, sample: int, cls: str = "StableDiffusionPipeline", **unet):
    index = {"_class_name": cls, "unet": ["diffusers", "UNet2DConditionModel"]}
    if cls.startswith("StableDiffusionXL"):
        index["text_encoder_2"] = ["transformers", "CLIPTextModelWithProjection"]
    vae = {"block_out_channels": [128, 256, 512, 512]}
    return index, {"cross_attention_dim": cross, "sample_size": sample, "in_channels": 4, **unet}, vae, {}


@pytest.mark.parametrize("name, configs, want", [
    ("runwayml/stable-diffusion-v1-5", _configs(768, 64), ("sd1", 512, 20, 7.5, False)),
    ("stabilityai/stable-diffusion-2-1", _configs(1024, 96), ("sd2", 768, 20, 7.5, False)),
    ("stabilityai/sd-turbo", _configs(1024, 64), ("sd2", 512, 1, 0.0, True)),
    ("stabilityai/stable-diffusion-xl-base-1.0", _configs(2048, 128, "StableDiffusionXLPipeline"),
     ("sdxl", 1024, 25, 6.0, False)),
    ("stabilityai/sdxl-turbo", _configs(2048, 64, "StableDiffusionXLPipeline"), ("sdxl", 512, 1, 0.0, True)),
    ("ByteDance/SDXL-Lightning", _configs(2048, 128, "StableDiffusionXLPipeline"), ("sdxl", 1024, 4, 0.0, True)),
    ("SimianLuo/LCM_Dreamshaper_v7", _configs(768, 96, "LatentConsistencyModelPipeline", time_cond_proj_dim=256),
     ("sd1", 768, 4, 8.0, True)),
])
def test_family_detection(name, configs, want):
    t = detect(name, *configs)
    assert (t.family, t.native[0], t.default_steps, t.default_guidance, t.few_step) == want


def test_lcm_scheduler_and_inpaint_unet_detected():
    index, unet, vae, _ = _configs(768, 64, in_channels=9)
    t = detect("my-merge", index, unet, vae, {"_class_name": "LCMScheduler"})
    assert t.variant == "lcm" and t.default_guidance == 1.0 and t.inpaint_unet


def test_name_guesses():
    assert guess("stabilityai/sdxl-turbo").native == (512, 512)
    assert guess("stabilityai/stable-diffusion-xl-base-1.0").family == "sdxl"
    assert guess("stabilityai/stable-diffusion-2-1").native == (768, 768)
    assert guess("someone/anything-v3").family == "sd1"


# ----------------------------------------------------------------------------- device and dtype


def test_dtype_rules(tmp_path):
    with_bf16, without = tmp_path / "a", tmp_path / "b"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16\n")
    without.write_text("processor\t: 0\nflags\t\t: fpu sse avx2\n")
    assert resolve_dtype("auto", "cpu", str(with_bf16)) == "bfloat16"
    assert resolve_dtype("auto", "cpu", str(without)) == "float32"
    assert resolve_dtype("auto", "cpu", str(tmp_path / "missing")) == "float32"
    assert resolve_dtype("auto", "cuda") == "float16" and resolve_dtype("auto", "mps") == "float16"
    assert resolve_dtype("bfloat16", "cpu", str(without)) == "bfloat16"
    assert model_dtype("auto", "bfloat16", "cpu", SMALL_MODEL_BYTES - 1) == "float32"  # small models stay fp32
    assert model_dtype("auto", "bfloat16", "cpu", 2 * 2**30) == "bfloat16"
    assert model_dtype("bfloat16", "bfloat16", "cpu", 1000) == "bfloat16"  # asked for explicitly
    assert model_dtype("auto", "float16", "cuda", 1000) == "float16"


def test_devices():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(EngineError) as err:
            Engine(["easel-demo"], device="cuda")
        assert err.value.field == "device" and "CUDA" in str(err.value)
    with pytest.raises(EngineError):
        resolve_device("tpu")


def test_auto_dtype_keeps_tiny_models_fp32_and_bf16_runs(tiny_sd_path):
    with Engine([tiny_sd_path], device="cpu") as eng:
        assert eng.pipeline(None).unet.dtype == torch.float32
    with Engine([tiny_sd_path], device="cpu", dtype="bfloat16") as eng:
        assert eng.dtype == "bfloat16" and eng.pipeline(None).unet.dtype == torch.bfloat16
        assert eng.pipeline(None, "img2img").unet.dtype == torch.bfloat16  # from_pipe keeps the dtype
        out = generate(eng)
        assert out.shape == (64, 64, 3) and out.std() > 0


# ----------------------------------------------------------------------------- previews and the demo


def test_latent_preview_render_and_fit(tiny_sd_path):
    identity = LatentPreview(np.eye(4, 3), np.zeros(3), scale=2)
    latents = torch.zeros(2, 4, 8, 12)
    latents[0, 0] = 1.0  # all red
    img = identity.render(latents)
    assert img.size == (24, 16) and img.getpixel((3, 3)) == (255, 0, 0)
    from diffusers import AutoencoderKL

    fitted = LatentPreview.fit(AutoencoderKL.from_pretrained(tiny_sd_path, subfolder="vae"), 8)
    assert fitted is not None and fitted.weight.shape == (4, 3) and np.isfinite(fitted.weight).all()


def test_stock_vaes_use_published_factors(monkeypatch):
    from types import SimpleNamespace

    monkeypatch.setattr(LatentPreview, "fit", classmethod(lambda cls, *a: pytest.fail("no fit for stock VAEs")))
    for scaling, red_from_ch0 in ((0.18215, 0.3512), (0.13025, 0.3651)):
        vae = SimpleNamespace(config=SimpleNamespace(scaling_factor=scaling, block_out_channels=[128, 256, 512, 512],
                                                     latent_channels=4, shift_factor=None))
        preview = LatentPreview.for_vae(vae, 8)
        assert preview.weight[0, 0] == pytest.approx(red_from_ch0 / 2)  # [-1, 1] factors rescaled to [0, 1]
    assert LatentPreview(np.zeros((4, 3)), np.full(3, 0.5)).render(torch.zeros(1, 4, 2, 2)).getpixel((0, 0)) == (
        128, 128, 128)


def test_demo_model_info():
    eng = Engine(["easel-demo"], device="cpu")
    info = eng.model_info("easel-demo")
    assert (info.id, info.family, info.source, info.native) == ("easel-demo", "demo", "builtin", (64, 64))
    from easel.server.demo import model as demo

    if not os.path.exists(os.path.join(os.path.dirname(demo.__file__), "weights", "easel-demo.safetensors")):
        pytest.skip("demo weights not built yet")
    assert generate(eng).shape == (64, 64, 3)


def test_a_registered_builtin_model_is_served_like_any_other(tiny_sd_path, folder_result, monkeypatch):
    """The engine knows built-in models only through ``builtin_models``: one registered there is named, listed,
    loaded by its own loader (on the engine's device, in its dtype) and previewed with its own fitted map; its
    pixels are the same weights' from a folder."""
    from diffusers import DiffusionPipeline

    from easel.server import builtin_models
    from easel.server.families import Family
    from easel.server.traits import folder_configs

    loads = []

    def load(device: str, dtype: torch.dtype):
        loads.append((device, dtype))
        return DiffusionPipeline.from_pretrained(tiny_sd_path, dtype=dtype)

    red = ([[0.0, 0.0, 0.0]] * 4, [1.0, 0.0, 0.0])  # every latent previews as pure red
    entry = builtin_models.BuiltinModel("tiny-builtin", detect("tiny", *folder_configs(tiny_sd_path)), load,
                                        lambda: red)
    monkeypatch.setitem(builtin_models._MODELS, entry.id, entry)
    assert parse_ref("tiny-builtin").source == "builtin"
    with Engine(["tiny-builtin"], device="cpu", dtype="float32") as eng:
        info = eng.model_info(None)
        assert (info.id, info.source, info.family, info.native) == ("tiny-builtin", "builtin", Family.SD1, (64, 64))
        events: list[Progress] = []
        (img,) = eng.run(job(), events.append, lambda: False)
    assert loads == [("cpu", torch.float32)]
    assert np.array_equal(np.asarray(img), folder_result)
    previews = [np.asarray(e.preview) for e in events if e.preview is not None]
    assert previews and all((p == (255, 0, 0)).all() for p in previews)


def test_models_dir_confines_model_paths(tmp_path, tiny_sd_path):
    """With --models-dir, a reference not named at start-up reaches nowhere outside it: not by '..', not by
    a symlink; the models the server is started with are served wherever they are."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    shutil.copytree(tiny_sd_path, allowed / "mine")
    (allowed / "sneaky").symlink_to(tiny_sd_path)
    with Engine(["mine"], device="cpu", dtype="float32", models_dir=str(allowed)) as eng:
        assert eng.models()[0].id == "mine"
    for ref in (str(tiny_sd_path), os.path.relpath(tiny_sd_path, allowed), "sneaky"):
        with pytest.raises(EngineError) as err:
            parse_ref(ref, str(allowed))
        assert err.value.field == "model" and "outside the models folder" in str(err.value)
        with Engine([ref], device="cpu", dtype="float32", models_dir=str(allowed)) as eng:
            assert eng.model_info(None).source == "folder"
            assert os.path.samefile(parse_ref(ref, str(allowed), confine=False).location, tiny_sd_path)
