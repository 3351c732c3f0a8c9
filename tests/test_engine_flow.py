"""SD 3/3.5 and FLUX.1 on tiny random-weight pipelines: the three modes against raw diffusers, seeds
per image in a batch, family defaults, sizes, schedulers, previews of 16-channel latents, cancel and
variation seeds (Flux packs its latents)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from easel.server.engine import Engine, EngineError, EngineJob, JobCancelled
from helpers.engine_checks import arr, assert_close, assert_matches_raw, raw_pipelines, run
from helpers.engine_jobs import PROMPT, SIZE, _image, _mask, job

torch.set_num_threads(1)
@pytest.fixture(scope="module")
def engine(tiny_sd3_path, tiny_flux_path):
    with Engine([tiny_sd3_path, tiny_flux_path], device="cpu", dtype="float32") as eng:
        yield eng


@pytest.fixture(scope="module")
def raw_pipes(tiny_sd3_path, tiny_flux_path):
    """Plain diffusers pipelines straight from the folders: the reference results."""
    return raw_pipelines({"sd3": tiny_sd3_path, "flux": tiny_flux_path})


@pytest.mark.parametrize("family", ["sd3", "flux"])
@pytest.mark.parametrize("mode", ["txt2img", "img2img", "inpaint"])
def test_mode_matches_raw_diffusers_per_seed(engine, raw_pipes, tiny_sd3_path, tiny_flux_path, family, mode):
    model = {"sd3": tiny_sd3_path, "flux": tiny_flux_path}[family]
    j = job(mode, model=model, seeds=[3, 11], guidance=4.0)
    images = run(engine, j)
    assert_matches_raw(images, raw_pipes[family][mode], j, SIZE, differ=10)
    assert all(i.info["easel"]["guidance"] == 4.0 for i in images)


def test_family_traits_and_defaults(engine, tiny_sd3_path, tiny_flux_path, tmp_path):
    from helpers.tiny_flow_models import build_tiny_flux

    sd3, flux = engine.model_info(tiny_sd3_path), engine.model_info(tiny_flux_path)
    assert (sd3.family, sd3.native, sd3.default_steps, sd3.default_guidance) == ("sd3", (SIZE, SIZE), 28, 7.0)
    assert (flux.family, flux.native, flux.default_steps, flux.default_guidance) == ("flux", (1024, 1024), 28, 3.5)
    schnell = build_tiny_flux(tmp_path / "tiny-flux-schnell", guidance=False)
    with Engine([schnell], device="cpu", dtype="float32") as eng:
        info = eng.model_info(None)
        assert info.family == "flux" and info.few_step and (info.default_steps, info.default_guidance) == (4, 0.0)
        (img,) = run(eng, job(steps=None, negative_prompt=""))
        assert img.info["easel"]["steps"] == 4 and img.size == (SIZE, SIZE)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_sizes_must_fit_the_patches(engine, tiny_sd3_path, tiny_flux_path, family):
    model = {"sd3": tiny_sd3_path, "flux": tiny_flux_path}[family]
    bad = EngineJob(mode="txt2img", prompt=PROMPT, model=model, steps=1, width=68, height=64)
    with pytest.raises(EngineError) as err:
        run(engine, bad)
    assert err.value.field == "width" and "multiple of 8" in str(err.value)
    # multiples of 8 (the server's regions) run at the next multiple of 16 and come back at their size
    odd = EngineJob(mode="inpaint", prompt=PROMPT, model=model, steps=2, width=72, height=56, strength=0.7,
                    image=_image().resize((72, 56)), mask=_mask().resize((72, 56)))
    (img,) = run(engine, odd)
    assert img.size == (72, 56) and img.info["easel"]["run_size"] == [80, 64]
    (img,) = run(engine, EngineJob(mode="txt2img", prompt=PROMPT, model=model, steps=1, width=96, height=48))
    assert img.size == (96, 48)


def test_flow_models_refuse_other_schedulers(engine, tiny_flux_path):
    with pytest.raises(EngineError) as err:
        run(engine, job(model=tiny_flux_path, scheduler="dpmpp_2m"))
    assert err.value.field == "scheduler"
    (a,) = run(engine, job(model=tiny_flux_path, scheduler="euler"))
    (b,) = run(engine, job(model=tiny_flux_path))
    assert np.array_equal(arr(a), arr(b))


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_previews_of_16_channel_latents(engine, tiny_sd3_path, tiny_flux_path, family):
    model = {"sd3": tiny_sd3_path, "flux": tiny_flux_path}[family]
    events: list = []
    run(engine, job(model=model, preview=True, seeds=[1, 2]), events)
    previews = [e.preview for e in events if e.stage == "denoise" and e.preview is not None]
    assert len(previews) == 3  # one per step
    assert all(p.size == (SIZE // 8 * 2, SIZE // 8 * 2) and p.mode == "RGB" for p in previews)
    assert np.asarray(previews[-1]).std() > 0


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_cancel_within_one_step(engine, tiny_sd3_path, tiny_flux_path, family):
    model = {"sd3": tiny_sd3_path, "flux": tiny_flux_path}[family]
    events: list = []
    flag = {"on": False}

    def progress(e):
        events.append(e)
        if e.stage == "denoise" and e.step == 1:
            flag["on"] = True

    with pytest.raises(JobCancelled):
        engine.run(job(model=model, steps=10), progress, lambda: flag["on"])
    assert max(e.step for e in events if e.stage == "denoise") == 1


@pytest.mark.parametrize("family", ["sd3", "flux"])
@pytest.mark.parametrize("mode", ["txt2img", "img2img", "inpaint"])
def test_variation_seeds(engine, tiny_sd3_path, tiny_flux_path, family, mode):
    model = {"sd3": tiny_sd3_path, "flux": tiny_flux_path}[family]
    plain = run(engine, job(mode, model=model, seeds=[5, 6]))
    zero = run(engine, job(mode, model=model, seeds=[5, 6], variation_seed=9, variation_strength=0.0))
    full = run(engine, job(mode, model=model, seeds=[9], variation_seed=9, variation_strength=0.0))
    one = run(engine, job(mode, model=model, seeds=[5], variation_seed=9, variation_strength=1.0))
    assert np.array_equal(arr(plain[0]), arr(zero[0])) and np.array_equal(arr(one[0]), arr(full[0]))
    mid = run(engine, job(mode, model=model, seeds=[5, 6], variation_seed=9, variation_strength=0.3))
    again = run(engine, job(mode, model=model, seeds=[6], variation_seed=10, variation_strength=0.3))
    assert_close(mid[1], again[0])  # image i blends seed + i with variation_seed + i
    assert mid[0].info["easel"]["features"]["variation_seed"] == 9
    d_plain = np.abs(arr(mid[0]) - arr(plain[0])).mean()
    d_full = np.abs(arr(mid[0]) - arr(one[0])).mean()
    assert 0 < d_plain and 0 < d_full  # a blend, neither end


# ----------------------------------------------------------------------------- loading


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_hub_ids_and_names_detect_the_family(hub_cache, tiny_flux_path, tiny_sd3_path):
    from easel.server.traits import guess
    from helpers.tiny_models import make_fake_hub_cache

    make_fake_hub_cache(tiny_flux_path, hub_cache, "easel-test/tiny-flux")
    make_fake_hub_cache(tiny_sd3_path, hub_cache, "easel-test/stable-diffusion-3.5-large-turbo-tiny")
    with Engine(["easel-test/tiny-flux", "easel-test/stable-diffusion-3.5-large-turbo-tiny"], device="cpu",
                dtype="float32") as eng:
        flux, sd3 = eng.models()
        assert (flux.family, flux.source, flux.default_guidance) == ("flux", "hub", 3.5)  # before loading
        assert (sd3.family, sd3.native, sd3.default_steps, sd3.default_guidance) == ("sd3", (SIZE, SIZE), 4, 0.0)
        (img,) = run(eng, job(model=sd3.id, steps=2))
        assert img.size == (SIZE, SIZE)
    # names alone (hub models not downloaded yet)
    assert guess("black-forest-labs/FLUX.1-schnell").variant == "flux-schnell"
    assert (guess("stabilityai/stable-diffusion-3.5-medium").default_steps, guess("x/sd3.5_large").family) == (40, "sd3")
