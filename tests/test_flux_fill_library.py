"""FLUX.1 Fill in a models folder (tiny models): a FluxFillPipeline folder, whatever its name, is listed as a FLUX.1
inpainting model and a Fill transformer file as a FLUX.1 inpainting transformer, served with a Fill base folder (a
plain FLUX.1 folder is not one, and the problem says which folder it needs); ``prefer_inpaint_models`` then runs a
fill job on the plain FLUX.1 folder on the Fill folder found in the library.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from easel.client.protocol import GenerateRequest
from easel.server.engine import Engine
from easel.server.generation import run_generation
from easel.server.library.scan import Library
from easel.server.work import Inputs
from helpers.pictures import box_mask, texture

torch.set_num_threads(1)  # 2 shared cores


@pytest.fixture(scope="module")
def fill_folder(tmp_path_factory) -> str:
    from helpers.tiny_flow_models import build_tiny_flux

    return build_tiny_flux(tmp_path_factory.mktemp("fill") / "tiny-flux-fill", fill=True)


@pytest.fixture(scope="module")
def fill_file(fill_folder, tmp_path_factory) -> str:
    from diffusers import FluxTransformer2DModel
    from safetensors.torch import save_file

    weights = FluxTransformer2DModel.from_pretrained(fill_folder, subfolder="transformer").state_dict()
    path = tmp_path_factory.mktemp("fill-file") / "my-inpainter.safetensors"
    save_file({k: v.contiguous() for k, v in weights.items()}, path)
    return str(path)


def test_fill_folders_and_files_are_listed_as_inpainting(tiny_flux_path, fill_folder, fill_file, tmp_path):
    shutil.copy(fill_file, tmp_path)
    shutil.copytree(tiny_flux_path, tmp_path / "bases" / "plain-flux")
    alone = {e.id: e for e in Library([tmp_path]).scan()}["my-inpainter"]
    assert alone.desc.inpaint and alone.desc.label == "FLUX.1 inpainting transformer" and alone.config is None
    assert "needs the text encoders and VAE of a FLUX.1 inpainting (FluxFillPipeline) base folder" in alone.problem
    shutil.copytree(fill_folder, tmp_path / "bases" / "studio-model")  # no 'fill' in its name
    entries = {e.id: e for e in Library([tmp_path]).scan()}
    folder, file = entries["bases/studio-model"], entries["my-inpainter"]
    assert folder.desc.inpaint and folder.desc.label == "FLUX.1 inpainting" and folder.problem is None
    assert (file.problem, file.config) == (None, folder.path)
    assert not entries["bases/plain-flux"].desc.inpaint


def test_a_fill_job_runs_on_the_fill_folder_in_the_library(tiny_flux_path, fill_folder, tmp_path):
    shutil.copytree(fill_folder, tmp_path / "studio-model")
    with Engine([tiny_flux_path], models_dir=tmp_path, device="cpu", dtype="float32") as engine:
        found = next(m for m in engine.models() if m.inpaint)
        assert found.family == "flux" and found.id == "studio-model"
        request = GenerateRequest(job="j", preview=False, prompt="a red circle", steps=2, seed=5, width=64,
                                  height=64, inpaint_mode="fill")
        inputs = Inputs("inpaint", texture(64, 64, seed=3), box_mask(64, 64, (16, 16, 32, 32)))
        out = run_generation(engine, request, inputs, engine.model_info(None), lambda p: None, lambda: False)
    assert out.parameters["inpaint_model"] == "studio-model" and out.parameters["model"] != "studio-model"
    assert out.parameters["guidance"] == 30.0 and np.asarray(out.layers[0].rgba).shape[2] == 4
