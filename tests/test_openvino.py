"""The OpenVINO path (``--openvino``, engine/openvino_path.py) on the tiny SD 1.x and SDXL models: each mode's
picture equals torch's within one 8-bit step, the converted model is cached (a second load converts nothing),
jobs the graph does not cover (a LoRA, regions) run on torch bit-exact to ``--openvino off``, ``auto`` leaves
models below full size alone, and the choices are checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from easel.client.protocol import Region
from easel.server.engine import Engine, EngineError, openvino_path
from helpers.engine_checks import assert_close, run
from helpers.engine_jobs import SIZE, job

pytest.importorskip("openvino")
torch.set_num_threads(1)  # 2 shared cores


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory, monkeypatch_module):
    folder = tmp_path_factory.mktemp("openvino-cache")
    monkeypatch_module.setattr(openvino_path, "cache_folder", lambda: folder)
    return folder


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def engines(tiny_sd_path, tiny_sdxl_path):
    paths = [tiny_sd_path, tiny_sdxl_path]
    with Engine(paths, device="cpu", dtype="float32", openvino="on") as ov, \
            Engine(paths, device="cpu", dtype="float32", openvino="off") as plain:
        yield ov, plain


def same(a: Image.Image, b: Image.Image) -> bool:
    return np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("model", ["tiny-sd", "tiny-sdxl"])
@pytest.mark.parametrize("mode", ["txt2img", "img2img", "inpaint"])
def test_each_mode_equals_torch_within_one_step(engines, model, mode):
    ov, plain = engines
    events: list = []
    (got,) = run(ov, job(mode, model=model, strength=0.7), events)
    (want,) = run(plain, job(mode, model=model, strength=0.7))
    assert_close(got, want)
    assert ov._cache.peek(model).openvino is not None and plain._cache.peek(model).openvino is None
    seeds = run(ov, job(mode, model=model, strength=0.7, seeds=[8, 7]))  # each image its own seed
    assert_close(seeds[1], want)


def test_a_second_load_reads_the_cache_and_says_what_it_does(engines, tiny_sd_path, cache):
    messages: list[str] = []
    with Engine([tiny_sd_path], device="cpu", dtype="float32", openvino="on") as eng:
        eng.run(job(), lambda p: messages.append(p.message), lambda: False)
    assert not any("converting" in m for m in messages)  # the fixture's engines converted it
    assert any("compiling the UNet for OpenVINO" in m for m in messages)
    kinds = sorted(p.name.split("-")[0] for p in cache.iterdir() if p.name != "compiled")
    assert kinds == ["UNet", "UNet", "VAE decoder"]  # the tiny SD and SDXL share their decoder's weights


def test_a_size_the_trace_does_not_fit_runs_its_unet_on_torch(engines):
    """72 px: 9 latent pixels a side, which the UNet's upsampler cannot simply double back."""
    ov, plain = engines
    odd = job("img2img", image=Image.new("RGB", (72, 72), (90, 120, 200)), strength=0.7)
    odd.width = odd.height = 72
    assert_close(run(ov, odd)[0], run(plain, odd)[0])


def test_jobs_the_graph_does_not_cover_run_on_torch(engines, tiny_sd_path, tmp_path):
    from helpers.tiny_models import write_tiny_lora

    ov, plain = engines
    mask = Image.new("RGB", (SIZE, SIZE))
    mask.paste((255, 255, 255), (0, 0, SIZE // 2, SIZE))
    regions = job(regions=[Region("r", "a blue dog")], attached={"r": mask})
    assert same(run(ov, regions)[0], run(plain, regions)[0])
    write_tiny_lora(tiny_sd_path, tmp_path / "loras" / "ink.safetensors")
    with Engine([tiny_sd_path], device="cpu", dtype="float32", openvino="on", loras_dir=tmp_path / "loras") as eng, \
            Engine([tiny_sd_path], device="cpu", dtype="float32", openvino="off", loras_dir=tmp_path / "loras") as off:
        lora = job(loras=[("ink.safetensors", 0.8)])
        assert same(run(eng, lora)[0], run(off, lora)[0])
        assert_close(run(eng, job())[0], run(off, job())[0])  # and the next plain job is OpenVINO's again


def test_auto_leaves_small_models_on_torch_and_bad_choices_name_the_field(tiny_sd_path):
    with Engine([tiny_sd_path], device="cpu", dtype="float32") as eng:  # auto: the tiny UNet is far below
        run(eng, job())
        assert eng._cache.peek("tiny-sd").openvino is None
    with pytest.raises(EngineError) as err:
        Engine([tiny_sd_path], device="cpu", dtype="float32", openvino="maybe")
    assert err.value.field == "openvino" and "auto, on, off" in str(err.value)
