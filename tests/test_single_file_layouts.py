"""Single files in every key layout and dtype ComfyUI accepts load offline and give the same pixels as
the same weights in a diffusers folder; pickles load only through weights_only; the shipped configs
are complete diffusers config folders."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from easel.server.engine import Engine, EngineError
from easel.server.library.configs import CONFIGS, config_folder
from helpers.pictures import engine_job
from helpers.tiny_models import config_only_copy, write_single_file

torch.set_num_threads(1)


def generate(eng: Engine, model: str | None = None) -> np.ndarray:
    job = engine_job("txt2img", 64, "a red circle", model=model, steps=2, seeds=[3])
    return np.asarray(eng.run(job, lambda p: None, lambda: False)[0])


def _pair(folder: str, file: str, tmp_path) -> tuple[np.ndarray, np.ndarray]:
    """Pixels from the folder and from the file (its config beside it), in one engine."""
    config_only_copy(folder, os.path.splitext(file)[0])
    with Engine([folder, file], device="cpu", dtype="float32") as eng:
        folder_id, file_id = (m.id for m in eng.models())
        return generate(eng, folder_id), generate(eng, file_id)


@pytest.mark.parametrize("which", ["sd", "sdxl"])
def test_text_encoder_keys_without_text_model(which, tiny_sd_path, tiny_sdxl_path, tmp_path):
    folder = tiny_sd_path if which == "sd" else tiny_sdxl_path
    state = load_file(write_single_file(folder, tmp_path / "full.safetensors"))
    flat = {k.replace(".transformer.text_model.", ".transformer."): v for k, v in state.items()}
    assert sum(".text_model." in k for k in flat) == 0 and sum(".transformer.embeddings." in k for k in flat) > 0
    flat["cond_stage_model.transformer.embeddings.position_ids" if which == "sd" else
         "conditioner.embedders.0.transformer.embeddings.position_ids"] = torch.arange(77, dtype=torch.float32)[None]
    file = tmp_path / "flat" / "model.safetensors"
    file.parent.mkdir()
    save_file(flat, str(file))
    want, got = _pair(folder, str(file), tmp_path)
    assert np.array_equal(want, got)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_files(dtype, tiny_sd_path, tmp_path):
    """A fp16/bf16 file equals a diffusers folder holding the same rounded weights."""
    from diffusers import StableDiffusionPipeline

    rounded = tmp_path / "rounded"
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_path, torch_dtype=dtype)
    pipe.save_pretrained(rounded)
    state = load_file(write_single_file(rounded, tmp_path / "tmp.safetensors"))
    assert {v.dtype for v in state.values()} == {dtype}
    file = tmp_path / "half" / "model.safetensors"
    file.parent.mkdir()
    save_file(state, str(file))
    want, got = _pair(str(rounded), str(file), tmp_path)
    assert np.array_equal(want, got)


def test_ckpt_loads_through_weights_only(tiny_sd_path, tmp_path):
    state = load_file(write_single_file(tiny_sd_path, tmp_path / "tmp.safetensors"))
    file = tmp_path / "ckpt" / "model.ckpt"
    file.parent.mkdir()
    torch.save({"state_dict": state, "global_step": 470000, "epoch": 6}, file)
    want, got = _pair(tiny_sd_path, str(file), tmp_path)
    assert np.array_equal(want, got)


class _Evil:
    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_ckpt_that_needs_code_is_refused(tiny_sd_path, tmp_path):
    state = load_file(write_single_file(tiny_sd_path, tmp_path / "tmp.safetensors"))
    file = tmp_path / "evil" / "model.ckpt"
    file.parent.mkdir()
    _Evil.marker = str(tmp_path / "ran")
    torch.save({"state_dict": state, "callbacks": _Evil()}, file)
    config_only_copy(tiny_sd_path, tmp_path / "evil" / "model")
    with Engine([str(file), tiny_sd_path], device="cpu", dtype="float32") as eng:
        with pytest.raises(EngineError) as err:
            eng.load("model")
        assert "refused" in str(err.value) and "needs code" in str(err.value) and ".safetensors" in str(err.value)
        assert err.value.field == "model" and not os.path.exists(_Evil.marker)
        assert generate(eng, "tiny-sd").shape == (64, 64, 3)  # the others keep working


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_shipped_configs_are_complete_diffusers_folders(name):
    import diffusers
    from transformers import CLIPTokenizer

    folder = config_folder(name)
    config = diffusers.DiffusionPipeline.load_config(folder)
    cls = getattr(diffusers, config["_class_name"])
    assert cls.__name__.startswith("StableDiffusion")
    for part in ("unet", "vae", "scheduler"):
        assert os.path.isfile(os.path.join(folder, part, "scheduler_config.json" if part == "scheduler" else "config.json"))
    for part in ("tokenizer", "tokenizer_2"):
        if os.path.isdir(os.path.join(folder, part)):
            tok = CLIPTokenizer.from_pretrained(folder, subfolder=part)
            assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]  # CLIP's ids
    assert not [f for _, _, files in os.walk(folder) for f in files if f.endswith((".safetensors", ".bin"))]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_shipped_configs_fit_real_checkpoints(name):
    """diffusers' own single-file converters turn a real-layout checkpoint of each architecture (names
    and shapes, on the meta device) into exactly the tensors the shipped config's models have."""
    import json

    from diffusers.loaders import single_file_utils as sfu

    from easel.server.engine.single_file import normalise_keys
    from helpers.real_archs import checkpoint, modules

    ckpt = normalise_keys({k: torch.empty(v.shape, dtype=torch.float16, device="meta")
                           for k, v in checkpoint(name, text_model=name != "sd1").items()})  # SD1 without text_model.
    folder = config_folder(name)
    want = modules(name)

    def same(got: dict, part: str) -> None:
        expected = {k: tuple(v.shape) for k, v in want[part].items() if not k.endswith("position_ids")}
        assert {k: tuple(v.shape) for k, v in got.items() if not k.endswith("position_ids")} == expected, part

    for part, convert in (("unet", sfu.convert_ldm_unet_checkpoint), ("vae", sfu.convert_ldm_vae_checkpoint)):
        with open(os.path.join(folder, part, "config.json")) as f:
            same(convert(checkpoint=ckpt, config=json.load(f)), part)
    family = name.removesuffix("-inpaint").removesuffix("-v")
    for part in ("text_encoder", "text_encoder_2"):
        if part in want:
            got = _convert_text(sfu, family, part, ckpt, folder)
            if "text_model.embeddings.token_embedding.weight" not in want[part]:  # transformers >= 5.6: flattened
                got = {k.removeprefix("text_model."): v for k, v in got.items()}
            same(got, part)


def _convert_text(sfu, family: str, part: str, ckpt: dict, folder: str) -> dict:
    """The conversion diffusers picks for this family's text encoder (create_diffusers_clip_model_from_ldm)."""
    if family == "sd1" or (family == "sdxl" and part == "text_encoder"):
        return sfu.convert_ldm_clip_checkpoint(ckpt)
    prefix = {"sd2": "cond_stage_model.model.", "sdxl-refiner": "conditioner.embedders.0.model.",
              "sdxl": "conditioner.embedders.1.model."}[family]
    return sfu.convert_open_clip_checkpoint(_text_model(folder, part), ckpt, prefix)


def _text_model(folder: str, part: str):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig.from_pretrained(folder, subfolder=part)
    cls = CLIPTextModelWithProjection if "WithProjection" in str(config.architectures) else CLIPTextModel
    with torch.device("meta"):
        return cls(config)
