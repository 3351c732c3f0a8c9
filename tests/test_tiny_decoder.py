"""The tiny VAE decoder (``easel serve --decoder tiny|full``, ``--live-decoder``; engine/tiny_vae.py) on tiny
random-weight AutoencoderTiny decoders built here: a tiny-decoded job equals raw diffusers with ``pipe.vae``
swapped (SD 1.x, SDXL, FLUX.1; the SDXL refiner hands its latents on), image to image still encodes with the
full VAE, the full decoder stays as it was, live frames on the CPU decode tiny by default, where the decoders
are found (models folders' diffusers folders and ComfyUI decoder files, the Hugging Face cache), missing ones,
``easel download``, and a real ``easel serve --decoder tiny``."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from easel.client.connection import Client, new_job_id
from easel.client.protocol import GenerateRequest
from easel.server.engine import Engine, EngineError, tiny_vae
from easel.server.families import Family
from helpers.engine_checks import arr, raw_call, run
from helpers.engine_jobs import SIZE, job
from helpers.fake_hub import FakeHub
from helpers.server_harness import REPO, running_server
from helpers.tiny_models import make_fake_hub_cache

torch.set_num_threads(1)
CHANNELS = {"sd": 4, "sdxl": 4, "flux": 16}
REPOS = {"sd": "madebyollin/taesd", "sdxl": "madebyollin/taesdxl", "flux": "madebyollin/taef1"}


def build_tiny_decoder(folder, latent_channels: int, seed: int = 0) -> str:
    """A random-weight AutoencoderTiny with TAESD's architecture, saved as a diffusers folder."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    vae = AutoencoderTiny(latent_channels=latent_channels)
    vae.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def decoders(tmp_path_factory) -> dict[str, str]:
    """One tiny decoder folder per latent space the tests use."""
    root = tmp_path_factory.mktemp("tiny_decoders")
    return {name: build_tiny_decoder(root / REPOS[name].split("/")[1], channels, seed=i)
            for i, (name, channels) in enumerate(CHANNELS.items())}


@pytest.fixture
def cached(hub_cache, decoders):
    """The tiny decoders in this test's (offline) Hugging Face cache under their hub ids."""
    for name, folder in decoders.items():
        make_fake_hub_cache(folder, hub_cache, REPOS[name])
    return hub_cache


def raw_pipe(path: str, mode: str = "txt2img"):
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image

    pipe = AutoPipelineForText2Image.from_pretrained(path, dtype=torch.float32)
    pipe = AutoPipelineForImage2Image.from_pipe(pipe) if mode == "img2img" else pipe
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny(folder: str):
    from diffusers import AutoencoderTiny

    return AutoencoderTiny.from_pretrained(folder)


def live(j):
    """``j`` as a live painting frame (its request says ``replace``)."""
    j.request = GenerateRequest(job=new_job_id(), prompt=j.prompt, replace=True)
    return j


@pytest.mark.parametrize("family", ["sd", "sdxl", "flux"])
def test_tiny_decoder_equals_raw_diffusers_with_its_vae_swapped(cached, decoders, family, tiny_sd_path,
                                                                tiny_sdxl_path, tiny_flux_path):
    path = {"sd": tiny_sd_path, "sdxl": tiny_sdxl_path, "flux": tiny_flux_path}[family]
    j = job(model=path, seeds=[3], steps=2, guidance=4.0)
    with Engine([path], device="cpu", dtype="float32", decoder="tiny") as engine:
        (img,) = run(engine, j)
    assert img.size == (SIZE, SIZE) and img.info["easel"]["features"] == {"decoder": "tiny"}
    pipe = raw_pipe(path)
    full = raw_call(pipe, j, 3)
    pipe.vae = tiny(decoders[family])  # diffusers' documented use of the TAESD decoders
    assert np.array_equal(arr(img), arr(raw_call(pipe, j, 3)))
    assert np.abs(arr(img) - arr(full)).max() > 10  # another decoder: other pixels


def test_image_to_image_encodes_with_the_full_vae(cached, decoders, tiny_sd_path):
    j = job("img2img", model=tiny_sd_path, seeds=[5], steps=3)
    with Engine([tiny_sd_path], device="cpu", dtype="float32", decoder="tiny") as engine:
        (img,) = run(engine, j)
    pipe, vae = raw_pipe(tiny_sd_path, "img2img"), tiny(decoders["sd"])
    latents = raw_call(pipe, j, 5, output_type="latent")[None]  # raw_call gives image 0 of the batch
    with torch.no_grad():
        pixels = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
    expected = pipe.image_processor.postprocess(pixels, output_type="pil")[0]
    assert np.array_equal(arr(img), arr(expected))


def test_the_refiner_hands_its_latents_to_the_tiny_decoder(cached, decoders, tiny_sdxl_path, tmp_path):
    from diffusers import StableDiffusionXLImg2ImgPipeline

    from helpers.tiny_models import build_tiny_refiner

    refiner = build_tiny_refiner(tmp_path / "refiner")
    j = job(model=tiny_sdxl_path, seeds=[6], steps=4, guidance=4.0, refiner=True, refiner_switch=0.5)
    with Engine([tiny_sdxl_path], device="cpu", dtype="float32", refiner=refiner, decoder="tiny") as engine:
        (img,) = run(engine, j)
    assert img.info["easel"]["features"]["decoder"] == "tiny"
    common = dict(prompt=j.prompt, negative_prompt=j.negative_prompt, num_inference_steps=4, guidance_scale=4.0,
                  generator=torch.Generator("cpu").manual_seed(6))
    latents = raw_pipe(tiny_sdxl_path)(**common, width=SIZE, height=SIZE, denoising_end=0.5,
                                       output_type="latent").images
    rpipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(refiner, dtype=torch.float32)
    rpipe.set_progress_bar_config(disable=True)
    rpipe.vae = tiny(decoders["sdxl"])
    expected = rpipe(**common, image=latents, denoising_start=0.5).images[0]
    assert np.array_equal(arr(img), arr(expected))


def test_full_decoder_stays_as_it_was_and_live_frames_on_the_cpu_decode_tiny(cached, decoders, tiny_sd_path):
    j = job(model=tiny_sd_path, seeds=[9], steps=2)
    pipe = raw_pipe(tiny_sd_path)
    with Engine([tiny_sd_path], device="cpu", dtype="float32") as engine:  # decoder full, live_decoder auto
        (plain,) = run(engine, j)
        (frame,) = run(engine, live(job(model=tiny_sd_path, seeds=[9], steps=2)))
    assert np.array_equal(arr(plain), arr(raw_call(pipe, j, 9))) and "features" not in plain.info["easel"]
    assert frame.info["easel"]["features"] == {"decoder": "tiny"}
    pipe.vae = tiny(decoders["sd"])
    assert np.array_equal(arr(frame), arr(raw_call(pipe, j, 9)))
    with Engine([tiny_sd_path], device="cpu", dtype="float32", live_decoder="full") as engine:
        (frame,) = run(engine, live(job(model=tiny_sd_path, seeds=[9], steps=2)))
    assert np.array_equal(arr(frame), arr(plain))


def test_missing_decoders(hub_cache, tiny_sd_path, caplog):
    with pytest.raises(EngineError) as err:
        Engine([tiny_sd_path], device="cpu", dtype="float32", decoder="tiny")
    assert "--decoder tiny" in str(err.value) and "`easel download madebyollin/taesd`" in str(err.value)
    with Engine([tiny_sd_path], device="cpu", dtype="float32") as engine:  # live auto: the full VAE, said once
        with caplog.at_level(logging.INFO, logger="easel.server.engine.tiny_vae"):
            first, again = (run(engine, live(job(model=tiny_sd_path, seeds=[2], steps=1)))[0] for _ in range(2))
        (plain,) = run(engine, job(model=tiny_sd_path, seeds=[2], steps=1))
    assert np.array_equal(arr(first), arr(plain)) and "features" not in first.info["easel"]
    assert [r.getMessage() for r in caplog.records].count(
        "live painting decodes SD 1.x with the full VAE: its tiny decoder is not here (easel download "
        "madebyollin/taesd)") == 1
    with Engine([tiny_sd_path], device="cpu", dtype="float32", live_decoder="tiny") as engine:
        with pytest.raises(EngineError) as err:
            run(engine, live(job(model=tiny_sd_path, steps=1)))
    assert "--live-decoder tiny" in str(err.value) and "madebyollin/taesd" in str(err.value)
    with pytest.raises(EngineError) as err:
        Engine([tiny_sd_path], device="cpu", decoder="small")
    assert err.value.field == "decoder" and "full, tiny" in str(err.value)


def test_where_decoders_are_found(hub_cache, decoders, tmp_path):
    """Models folders' diffusers folders, then the Hugging Face cache, then ComfyUI decoder files, whose
    weights decode exactly as the diffusers folder of the same network."""
    from safetensors.torch import save_file

    models = tmp_path / "ComfyUI" / "models"
    (models / "checkpoints").mkdir(parents=True)
    approx = models / "vae_approx"
    approx.mkdir()
    vae = tiny(decoders["sd"])
    taesd = {f"{int(k.split('.')[1]) + 1}.{k.split('.', 2)[2]}": v.contiguous()
             for k, v in vae.decoder.state_dict().items()}  # TAESD's layout: a weightless clamp first
    save_file(taesd, approx / "taesd_decoder.safetensors")
    roots = [str(tmp_path / "ComfyUI")]
    assert tiny_vae.locate(Family.SD2, roots) == str(approx / "taesd_decoder.safetensors")
    assert tiny_vae.locate(Family.SDXL, roots) is None and tiny_vae.locate(Family.DEMO, roots) is None
    cached = make_fake_hub_cache(decoders["sd"], hub_cache, "madebyollin/taesd")
    assert tiny_vae.locate(Family.SD1, roots) == cached
    os.symlink(decoders["sd"], approx / "taesd")
    assert tiny_vae.locate(Family.SD1, roots) == str(approx / "taesd")
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    from_file = tiny_vae.load(str(approx / "taesd_decoder.safetensors"), 4, torch.float32, "cpu")
    with torch.no_grad():
        assert torch.equal(from_file.decode(latents).sample, vae.decode(latents).sample)


def test_easel_download_fetches_the_diffusers_decoder(hub_cache, decoders, tmp_path):
    """``easel download madebyollin/taesd`` through a stand-in hub: config and diffusers weights only (not the
    repository's TAESD-format files), into the cache where ``--decoder tiny`` finds them."""
    repo = tmp_path / "taesd-repo"
    shutil.copytree(decoders["sd"], repo)
    for extra in ("taesd_decoder.safetensors", "taesd_decoder.pth", "diffusion_pytorch_model.bin", "README.md"):
        (repo / extra).write_bytes(b"x" * 64)
    code = "import sys\nfrom easel.cli import main\nsys.exit(main(sys.argv[1:]))"
    with FakeHub({"madebyollin/taesd": str(repo)}) as hub:
        done = subprocess.run([sys.executable, "-c", code, "download", "madebyollin/taesd"], cwd=REPO, text=True,
                              capture_output=True, timeout=120,
                              env={**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0",
                                   "HF_HUB_CACHE": str(hub_cache), "HF_HUB_DISABLE_TELEMETRY": "1"})
    assert done.returncode == 0, done.stderr
    assert "a tiny VAE decoder for easel serve --decoder tiny" in done.stdout
    folder = tiny_vae.locate(Family.SD1, [])
    assert folder is not None and sorted(os.listdir(folder)) == ["config.json", "diffusion_pytorch_model.safetensors"]


def test_easel_serve_decoder_tiny(cached, decoders, tiny_sd_path, tmp_path):
    env = {"HF_HUB_CACHE": str(cached), "EASEL_CONFIG": str(tmp_path / "none.toml")}
    with running_server([tiny_sd_path], "--decoder", "tiny", "--no-preload", env=env) as url:
        with Client(url, image_format="rgba") as client:
            result = client.generate(GenerateRequest(job=new_job_id(), prompt="a red cat", steps=2, seed=4,
                                                     width=SIZE, height=SIZE, exact_size=True, guidance=4.0))
    assert result.parameters["decoder"] == "tiny"
    (item,) = result.images
    got = Image.frombytes("RGBA", (item.image.width, item.image.height), item.image.data).convert("RGB")
    pipe = raw_pipe(tiny_sd_path)
    pipe.vae = tiny(decoders["sd"])
    expected = raw_call(pipe, job(model=tiny_sd_path, steps=2, guidance=4.0, negative_prompt=""), 4)
    assert np.array_equal(arr(got), arr(expected))
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    done = subprocess.run([sys.executable, "-m", "easel", "serve", "--model", tiny_sd_path, "--decoder", "tiny",
                           "--port", "0"], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env, "HF_HUB_CACHE": str(empty), "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "easel serve: --decoder tiny: the tiny decoder of SD 1.x models (madebyollin/taesd) is not in the Hugging "
        "Face cache; fetch it once with `easel download madebyollin/taesd`, or start the server with --decoder full")
