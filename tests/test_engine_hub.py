"""Hub ids in the engine: offline through a fake Hugging Face cache, which files a download selects, and
download progress and cancel (the download itself, through a fake hub: test_library_cli.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from easel.server.engine import Engine, EngineError, JobCancelled, Progress
from easel.server.engine.hub import reporting_tqdm, select_files
from helpers.loading_checks import generate

torch.set_num_threads(1)


def test_hub_id_resolves_offline_from_the_cache(hub_cache, tiny_sd_path, folder_result):
    from helpers.tiny_models import make_fake_hub_cache

    snapshot = make_fake_hub_cache(tiny_sd_path, hub_cache, "easel-test/tiny-sd")
    with Engine(["easel-test/tiny-sd"], device="cpu", dtype="float32") as eng:
        info = eng.model_info(None)
        assert (info.id, info.source, info.family, info.native) == ("easel-test/tiny-sd", "hub", "sd1", (64, 64))
        events: list[Progress] = []
        eng.load(None, events.append)
        assert events and all(e.stage == "load" for e in events) and events[-1].step == events[-1].total
        assert os.path.realpath(eng.pipeline(None).config["_name_or_path"]) == os.path.realpath(snapshot)
        assert np.array_equal(generate(eng), folder_result)


def test_hub_id_not_cached_offline_says_how_to_fix(hub_cache):
    with Engine(["easel-test/not-downloaded"], device="cpu") as eng:
        assert eng.model_info(None).family == "sd1"  # a guess until it loads
        with pytest.raises(EngineError) as err:
            eng.load(None)
    assert err.value.field == "model" and err.value.code == "model_load_failed"
    assert "hf download easel-test/not-downloaded" in str(err.value)


def test_hub_download_path_selects_files_and_reports_bytes(monkeypatch, tiny_sd_path):
    """The online branch, with the three hub calls replaced: what it asks for and what it reports."""
    from easel.server.engine import hub

    calls: dict = {}

    def fake_snapshot(repo, **kw):
        calls.update(repo=repo, **kw)
        bar = kw["tqdm_class"](total=2048, unit="B")
        bar.update(1024)
        bar.update(1024)
        return tiny_sd_path

    files = [os.path.relpath(os.path.join(root, f), tiny_sd_path).replace(os.sep, "/")
             for root, _, names in os.walk(tiny_sd_path) for f in names]
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "hf_hub_download", lambda repo, name: os.path.join(tiny_sd_path, name))
    monkeypatch.setattr(hub.HfApi, "list_repo_files", lambda self, repo: files)
    monkeypatch.setattr(hub, "snapshot_download", fake_snapshot)
    events: list[Progress] = []
    with Engine(["easel-test/online-sd"], device="cpu", dtype="float32") as eng:
        eng.load(None, events.append)
        assert eng.model_info(None).loaded
    assert calls["repo"] == "easel-test/online-sd"
    assert set(calls["allow_patterns"]) == set(files)  # everything in a tiny folder is needed
    downloads = [e for e in events if "downloading" in e.message]
    assert downloads and (downloads[-1].step, downloads[-1].total) == (2048, 2048)


def test_hub_file_selection():
    index = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
             "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"], "feature_extractor": [None, None]}
    files = ["model_index.json", "v1-5-pruned.safetensors", "unet/config.json",
             "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
             "unet/diffusion_pytorch_model.bin", "vae/config.json", "vae/diffusion_pytorch_model.fp16.safetensors",
             "text_encoder/config.json", "text_encoder/pytorch_model.bin",
             "safety_checker/config.json", "safety_checker/model.safetensors"]
    fp32 = select_files(index, files, want_fp16=False)
    assert set(fp32) == {"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                         "vae/config.json", "vae/diffusion_pytorch_model.fp16.safetensors",  # the only one
                         "text_encoder/config.json", "text_encoder/pytorch_model.bin"}
    fp16 = select_files(index, files, want_fp16=True)
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in fp16
    assert "unet/diffusion_pytorch_model.safetensors" not in fp16


def test_one_model_repository_file_selection():
    """A repository's extra files and extra weight variants stay on the hub; a sharded model keeps every shard."""
    from easel.server.engine.hub import select_folder_files

    union = ["config.json", "config_promax.json", "diffusion_pytorch_model.safetensors",
             "diffusion_pytorch_model_promax.safetensors", "README.md", "images/example.png", ".gitattributes",
             "diffusion_flax_model.msgpack", "tf_model.h5"]
    assert set(select_folder_files(union, "", want_fp16=False)) == {
        "config.json", "config_promax.json", "diffusion_pytorch_model.safetensors"}
    shards = ["unet/config.json", "unet/diffusion_pytorch_model.safetensors.index.json",
              "unet/diffusion_pytorch_model-00001-of-00002.safetensors",
              "unet/diffusion_pytorch_model-00002-of-00002.safetensors"]
    assert set(select_folder_files(shards, "unet/", want_fp16=False)) == set(shards)
    tokenizer = ["tokenizer/tokenizer_config.json", "tokenizer/spiece.model", "tokenizer/merges.txt"]
    assert set(select_folder_files(tokenizer, "tokenizer/", want_fp16=False)) == set(tokenizer)


def test_download_progress_reports_bytes_and_cancels():
    seen: list[tuple[int, int]] = []
    stop = {"now": False}
    bar = reporting_tqdm(lambda d, t: seen.append((d, t)), lambda: stop["now"])(total=100, unit="B")
    bar.update(40)
    bar.update(60)
    assert seen[-1] == (100, 100)
    stop["now"] = True
    with pytest.raises(JobCancelled):
        bar.update(1)


