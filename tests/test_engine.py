"""Engine behaviour on tiny real diffusers pipelines: modes, parity with raw diffusers, seeds,
shared weights across modes, LRU eviction, schedulers, few-step models, cancel and previews."""

from __future__ import annotations

import threading
import weakref

import numpy as np
import pytest
import torch
from PIL import Image

from easel.client.protocol import SCHEDULERS
from easel.server.engine import Engine, EngineError, EngineJob, JobCancelled, Progress
from helpers import engine_jobs
from helpers.engine_checks import arr, assert_matches_raw, raw_pipelines, run
from helpers.engine_jobs import PROMPT, SIZE, _image

torch.set_num_threads(1)  # 2 shared cores: one thread is several times faster than two under load


def _mask() -> Image.Image:
    return engine_jobs._mask(soft=True)  # these tests' selections have a soft edge


def job(mode: str = "txt2img", **kw) -> EngineJob:
    return engine_jobs.job(mode, soft=True, **kw)


@pytest.fixture(scope="module")
def engine(tiny_sd_path, tiny_sdxl_path):
    with Engine([tiny_sd_path, tiny_sdxl_path], device="cpu", dtype="float32") as eng:
        yield eng


@pytest.fixture(scope="module")
def raw_pipes(tiny_sd_path, tiny_sdxl_path):
    """Plain diffusers pipelines straight from the folders: the reference results."""
    return raw_pipelines({"sd": tiny_sd_path, "sdxl": tiny_sdxl_path})


# ----------------------------------------------------------------------------- modes and parity


@pytest.mark.parametrize("family", ["sd", "sdxl"])
@pytest.mark.parametrize("mode", ["txt2img", "img2img", "inpaint"])
def test_mode_matches_raw_diffusers_per_seed(engine, raw_pipes, tiny_sd_path, tiny_sdxl_path, family, mode):
    model = {"sd": tiny_sd_path, "sdxl": tiny_sdxl_path}[family]
    j = job(mode, model=model, seeds=[3, 11], guidance=7.5)
    images = run(engine, j)
    assert_matches_raw(images, raw_pipes[family][mode], j, SIZE, differ=20)
    assert all(i.info["easel"]["steps"] == 3 for i in images)


def test_seeds_reproducible(engine):
    a, b = run(engine, job(seeds=[5])), run(engine, job(seeds=[5]))
    assert np.array_equal(arr(a[0]), arr(b[0]))


def test_inpaint_size_always_passed(engine, tiny_sd_path):
    """Inpaint pipelines default to the native size; a non-native job must still come back at its size."""
    big = EngineJob(mode="inpaint", prompt=PROMPT, model=tiny_sd_path, steps=2, width=96, height=80,
                    image=Image.new("RGB", (96, 80), (20, 200, 20)), mask=Image.new("L", (96, 80), 255))
    (img,) = run(engine, big)
    assert img.size == (96, 80)


# ----------------------------------------------------------------------------- shared weights and LRU


def test_modes_share_weights_without_reloading(tiny_sd_path):
    with Engine([tiny_sd_path], device="cpu", dtype="float32") as eng:
        for mode in ("txt2img", "img2img", "inpaint", "txt2img", "inpaint"):
            run(eng, job(mode, steps=2))
        assert eng.load_count == 1
        t2i, i2i, inp = (eng.pipeline(None, m) for m in ("txt2img", "img2img", "inpaint"))
        assert t2i is not i2i is not inp
        assert t2i.unet is i2i.unet is inp.unet
        assert t2i.vae is i2i.vae is inp.vae and t2i.text_encoder is inp.text_encoder
        assert eng.pipeline(None, "img2img") is i2i  # cached, not rebuilt
        assert eng.load_count == 1


def test_lru_eviction_frees_models(tiny_sd_path, tiny_sdxl_path):
    with Engine([tiny_sd_path, tiny_sdxl_path], device="cpu", dtype="float32", max_loaded=1) as eng:
        sd, sdxl = (m.id for m in eng.models())
        run(eng, job(model=sd, steps=1))
        unet_ref = weakref.ref(eng.pipeline(sd).unet)
        assert eng.loaded_models() == [sd] and eng.model_info(sd).loaded
        run(eng, job(model=sdxl, steps=1))
        assert eng.loaded_models() == [sdxl]
        assert not eng.model_info(sd).loaded and eng.model_info(sdxl).loaded
        assert unet_ref() is None, "the evicted model's UNet is still referenced"
        run(eng, job(model=sd, steps=1))
        assert eng.load_count == 3


def test_lru_keeps_most_recent(tiny_sd_path, tiny_sdxl_path, tmp_path):
    from helpers.tiny_models import build_tiny_sd

    third = build_tiny_sd(tmp_path / "third")
    with Engine([tiny_sd_path, tiny_sdxl_path, third], device="cpu", dtype="float32", max_loaded=2) as eng:
        a, b, c = (m.id for m in eng.models())
        for model in (a, b, a, c):  # a was used after b, so b goes
            eng.load(model)
        assert eng.loaded_models() == [a, c]
        assert eng.load_count == 3


# ----------------------------------------------------------------------------- schedulers


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_scheduler_runs_and_model_scheduler_is_untouched(engine, tiny_sd_path, name):
    pipe = engine.pipeline(tiny_sd_path)
    before = (type(pipe.scheduler), dict(pipe.scheduler.config))
    (img,) = run(engine, job(model=tiny_sd_path, scheduler=name, steps=2, guidance=1.0 if name == "lcm" else 5.0))
    assert img.size == (SIZE, SIZE) and img.info["easel"]["scheduler"] == name
    assert np.asarray(img).std() > 0
    for mode in ("txt2img", "img2img", "inpaint"):
        p = engine.pipeline(tiny_sd_path, mode)
        assert (type(p.scheduler), dict(p.scheduler.config)) == before
    assert engine.schedulers() == list(SCHEDULERS)


def test_default_scheduler_unchanged_after_other_scheduler(engine, tiny_sd_path):
    first = run(engine, job(model=tiny_sd_path))
    run(engine, job(model=tiny_sd_path, scheduler="dpmpp_2m_karras"))
    again = run(engine, job(model=tiny_sd_path))
    assert np.array_equal(arr(first[0]), arr(again[0]))


# ----------------------------------------------------------------------------- few-step models


@pytest.fixture(scope="module")
def tiny_turbo(tmp_path_factory):
    from helpers.tiny_models import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("turbo") / "tiny-sd-turbo", scheduler="euler_a_trailing")


def test_few_step_defaults_and_low_strength(tiny_turbo):
    with Engine([tiny_turbo], device="cpu", dtype="float32") as eng:
        info = eng.model_info(None)
        assert info.few_step and info.default_steps == 1 and info.default_guidance == 0.0
        events: list[Progress] = []
        (img,) = run(eng, job("img2img", steps=None, strength=0.3), events)
        assert img.info["easel"]["steps"] == 4 and img.info["easel"]["guidance"] == 0.0
        denoise = [e for e in events if e.stage == "denoise"]
        assert "raised" in denoise[0].message and denoise[0].step == 0
        denoise = denoise[1:]
        assert [e.step for e in denoise] == [1] and denoise[0].total == 1
        (img,) = run(eng, job("txt2img", steps=None), events)  # 1 step, no CFG
        assert img.info["easel"]["steps"] == 1


def test_zero_strength_returns_input(engine):
    src = _image()
    (img,) = run(engine, job("img2img", strength=0.0, image=src))
    assert np.array_equal(np.asarray(img), np.asarray(src))


# ----------------------------------------------------------------------------- progress, previews, cancel


def test_progress_every_step_with_previews(engine, tiny_sdxl_path):
    events: list[Progress] = []
    run(engine, job(model=tiny_sdxl_path, steps=4), events)
    denoise = [e for e in events if e.stage == "denoise"]
    assert [(e.step, e.total) for e in denoise] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    for e in denoise:
        assert e.preview is not None and e.preview.mode == "RGB" and e.preview.size == (SIZE // 4, SIZE // 4)


def test_preview_shape_follows_aspect_and_can_be_off(engine, tiny_sd_path):
    events: list[Progress] = []
    wide = EngineJob(mode="txt2img", prompt=PROMPT, model=tiny_sd_path, steps=2, width=128, height=64)
    run(engine, wide, events)
    assert events[-1].preview.size == (128 // 4, 64 // 4)
    events.clear()
    wide.preview = False
    run(engine, wide, events)
    assert events and all(e.preview is None for e in events)


def test_cancel_stops_within_one_step_and_pipeline_stays_usable(tiny_sd_path):
    with Engine([tiny_sd_path], device="cpu", dtype="float32") as eng:
        unet = eng.pipeline(None).unet
        calls = []
        hook = unet.register_forward_hook(lambda *a: calls.append(1))
        flag = threading.Event()
        events: list[Progress] = []

        def progress(p: Progress) -> None:
            events.append(p)
            if p.step == 2:
                flag.set()

        with pytest.raises(JobCancelled):
            eng.run(job(steps=10), progress, flag.is_set)
        assert [e.step for e in events] == [1, 2] and len(calls) == 2
        hook.remove()
        (img,) = run(eng, job(steps=2))
        assert img.size == (SIZE, SIZE)
        with pytest.raises(JobCancelled):  # cancelled before it starts: nothing runs
            run(eng, job(), cancelled=lambda: True)


def test_run_from_worker_thread(engine):
    result: dict = {}
    worker = threading.Thread(target=lambda: result.setdefault("images", run(engine, job(steps=1))))
    worker.start()
    worker.join(60)
    assert result["images"][0].size == (SIZE, SIZE)


# ----------------------------------------------------------------------------- other pipelines and options


def test_nine_channel_inpaint_unet_serves_every_mode(tmp_path):
    from helpers.tiny_models import build_tiny_sd

    folder = build_tiny_sd(tmp_path / "tiny-sd-inpainting", inpaint_unet=True)
    with Engine([folder], device="cpu", dtype="float32") as eng:
        for mode in ("txt2img", "img2img", "inpaint"):
            (img,) = run(eng, job(mode, steps=2))
            assert img.size == (SIZE, SIZE)
        assert eng.pipeline(None).unet.config.in_channels == 9


def test_sdpa_attention_by_default(engine, tiny_sd_path, tiny_sdxl_path):
    from diffusers.models.attention_processor import AttnProcessor2_0

    for model in (tiny_sd_path, tiny_sdxl_path):
        pipe = engine.pipeline(model, "inpaint")
        for module in (pipe.unet, pipe.vae):
            assert all(isinstance(p, AttnProcessor2_0) for p in module.attn_processors.values())


def test_memory_options(tiny_sd_path, caplog):
    with caplog.at_level("INFO", logger="easel.server.engine"):
        eng = Engine([tiny_sd_path], device="cpu", dtype="float32", attention_slicing=True, vae_tiling=True,
                     cpu_offload=True)
        (img,) = run(eng, job(steps=1))
    assert img.size == (SIZE, SIZE)
    assert "cpu_offload ignored" in caplog.text
    pipe = eng.pipeline(None)
    assert pipe.vae.use_tiling
    eng.close()
    with pytest.raises(EngineError):
        run(eng, job())


@pytest.mark.parametrize("change, field", [
    ({"width": 60}, "width"), ({"height": 0}, "height"), ({"steps": 0}, "steps"), ({"seeds": []}, "seed"),
    ({"scheduler": "heun"}, "scheduler"), ({"guidance": -1.0}, "guidance"), ({"mode": "outpaint"}, "mode"),
])
def test_bad_jobs_name_the_field(engine, change, field):
    j = job()
    for key, value in change.items():
        setattr(j, key, value)
    with pytest.raises(EngineError) as err:
        run(engine, j)
    assert err.value.field == field


def test_image_jobs_need_matching_inputs(engine):
    with pytest.raises(EngineError) as err:
        run(engine, job("img2img", image=None))
    assert err.value.field == "image"
    with pytest.raises(EngineError) as err:
        run(engine, job("inpaint", mask=Image.new("L", (32, 32))))
    assert err.value.field == "mask" and "resize" in str(err.value)
