"""The real server on a models folder in each layout: it lists every entry (broken ones with their
problem), generates offline with every model, LoRA and the ControlNet, names a broken entry when it
is picked and keeps serving, and sees files added or removed while it runs."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from easel.client.connection import Client, JobFailed, new_job_id
from easel.client.protocol import GenerateRequest
from easel.client.protocol import Image as WireImage
from easel.server.engine import Engine
from helpers.library_fixtures import LAYOUTS, build_layout, make_assets
from helpers.server_harness import inprocess_server

torch.set_num_threads(1)
MODELS = ["dreamshaper_tiny", "sdxl/juggernaut_xl", "inpaint_tiny", "sd-folder", "xl-folder"]
BROKEN = {"truncated": "truncated", "copying": "still being copied", "corrupt": "corrupt", "flux_like": "FLUX.1"}


@pytest.fixture(scope="session")
def assets(tiny_sd_path, tiny_sdxl_path, tmp_path_factory) -> dict[str, str]:
    return make_assets(tiny_sd_path, tiny_sdxl_path, tmp_path_factory.mktemp("library_assets"))


def req(**kw) -> GenerateRequest:
    kw.setdefault("steps", 2)
    kw.setdefault("seed", 5)
    return GenerateRequest(job=new_job_id(), prompt="a red cat", width=64, height=64, **kw)


def pixels(image: WireImage) -> np.ndarray:
    return np.frombuffer(image.data, np.uint8).reshape(image.height, image.width, 4)[..., :3].astype(int)


def sketch() -> WireImage:
    img = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    img.paste((255, 255, 255, 255), (10, 10, 30, 54))
    return WireImage.rgba(64, 64, img.tobytes())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_server_lists_and_generates_with_every_entry(layout, assets, tmp_path):
    build_layout(tmp_path, layout, assets)
    with Engine([], models_dir=[str(tmp_path)], device="cpu", dtype="float32", max_loaded=1) as eng, \
            inprocess_server(eng) as (url, _), Client(url, image_format="rgba") as client:
        welcome = client.welcome
        listed = {m["id"]: m for m in welcome["models"]}
        assert set(listed) == set(MODELS) | set(BROKEN), layout
        assert welcome["models"][0]["id"] == welcome["default_model"] and "problem" not in welcome["models"][0]
        for broken, words in BROKEN.items():
            assert words in listed[broken]["problem"], broken
        assert (listed["inpaint_tiny"]["inpaint"], listed["sdxl/juggernaut_xl"]["family"]) == (True, "sdxl")
        assert listed["dreamshaper_tiny"]["name"] == "dreamshaper tiny"
        assert welcome["loras"] == ["ink.safetensors", "ink_xl.safetensors"]
        assert welcome["control_models"] == ["scribble"]
        for model in MODELS:  # the LoRA list of each model holds only LoRAs of its family
            want = ["ink_xl.safetensors"] if "xl" in model else ["ink.safetensors"]
            assert listed[model]["loras"] == want, model
        results = {m: pixels(client.generate(req(model=m)).images[0].image) for m in MODELS}
        assert np.array_equal(results["dreamshaper_tiny"], results["sd-folder"])  # single file == folder
        assert np.array_equal(results["sdxl/juggernaut_xl"], results["xl-folder"])
        with_lora = pixels(client.generate(req(model="dreamshaper_tiny", loras=[{"name": "ink.safetensors"}]))
                           .images[0].image)
        assert np.abs(with_lora - results["dreamshaper_tiny"]).max() > 5
        xl_lora = client.generate(req(model="xl-folder", loras=[{"name": "ink_xl.safetensors"}]))
        assert np.abs(pixels(xl_lora.images[0].image) - results["xl-folder"]).max() > 5
        guided = client.generate(req(model="sd-folder", control_model="scribble"), control=sketch())
        assert np.abs(pixels(guided.images[0].image) - results["sd-folder"]).max() > 5
        with pytest.raises(JobFailed) as err:  # a LoRA of another family
            client.generate(req(model="sd-folder", loras=[{"name": "ink_xl.safetensors"}]))
        assert err.value.field == "loras" and "SDXL" in str(err.value) and "sd-folder" in str(err.value)
        for broken, words in BROKEN.items():  # picking a broken entry names it; the server keeps serving
            with pytest.raises(JobFailed) as err:
                client.generate(req(model=broken))
            assert err.value.field == "model" and broken in str(err.value) and words in str(err.value)
        again = client.generate(req(model="dreamshaper_tiny"))
        assert np.array_equal(pixels(again.images[0].image), results["dreamshaper_tiny"])


def test_files_added_and_removed_while_serving(assets, tmp_path):
    build_layout(tmp_path, "comfyui", assets)
    with Engine([], models_dir=[str(tmp_path)], device="cpu", dtype="float32") as eng, \
            inprocess_server(eng) as (url, _), Client(url, image_format="rgba") as client:
        ids = {m["id"] for m in client.models()}
        assert "later" not in ids and "dreamshaper_tiny" in ids
        shutil.copy(assets["sd_file"], tmp_path / "checkpoints" / "later.safetensors")
        shutil.copytree(tmp_path / "checkpoints" / "dreamshaper_tiny", tmp_path / "checkpoints" / "later")
        os.remove(tmp_path / "checkpoints" / "dreamshaper_tiny.safetensors")
        shutil.rmtree(tmp_path / "checkpoints" / "dreamshaper_tiny")
        shutil.copy(assets["lora_sd"], tmp_path / "loras" / "fresh.safetensors")
        models = {m["id"]: m for m in client.models()}
        assert "later" in models and "dreamshaper_tiny" not in models
        assert "fresh.safetensors" in models["later"]["loras"]
        result = client.generate(req(model="later", loras=[{"name": "fresh.safetensors"}]))
        assert result.images[0].image.width == 64
        with pytest.raises(JobFailed) as err:
            client.generate(req(model="dreamshaper_tiny"))
        assert err.value.code == "unknown_model" and "later" in str(err.value)


def test_named_models_come_first_and_demo_is_the_empty_fallback(assets, tmp_path, tiny_sd_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with Engine([], models_dir=[str(empty)], device="cpu") as eng:
        assert [m.id for m in eng.models()] == ["easel-demo"]
        shutil.copy(assets["sd_file"], empty / "arrived.safetensors")
        shutil.copytree(tiny_sd_path, empty / "arrived", ignore=shutil.ignore_patterns("*.safetensors"))
        assert [m.id for m in eng.models()] == ["arrived"]  # a usable model replaces the demo as default
    build_layout(tmp_path / "lib", "flat", assets)
    shutil.copytree(tiny_sd_path, tmp_path / "lib" / "named" / "tiny-sd")
    with Engine(["named/tiny-sd"], models_dir=[str(tmp_path / "lib")], device="cpu") as eng:
        ids = [m.id for m in eng.models()]
        assert ids[0] == "tiny-sd" and "dreamshaper_tiny" in ids and "easel-demo" not in ids
        assert "named/tiny-sd" not in ids  # named and found in the folder: listed once
