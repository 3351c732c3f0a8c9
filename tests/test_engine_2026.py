"""The 2026 families on tiny random-weight pipelines (tests/helpers/tiny_2026_models.py): Chroma, Z-Image,
Qwen-Image and FLUX.2 Klein in the three modes against raw diffusers with seeds per image in a batch
(Qwen-Image's guidance as true CFG; Klein's image jobs are edits: tests/test_klein_edits.py), their
defaults and features (refused ones with the family's reason), previews of their latents (packed ones
unpacked), cancel, variation seeds, LoRAs (Chroma: its own and FLUX.1's), the tiny decoder, the few-step
models (Z-Image-Turbo, distilled Klein); their single files: tests/test_library_2026_files.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from easel.server.engine import Engine, EngineError, EngineJob, JobCancelled
from easel.server.families import Family
from helpers.engine_checks import arr, assert_close, assert_matches_raw, raw_call, run
from helpers.engine_jobs import SIZE, job

torch.set_num_threads(1)
FAMILIES = ["chroma", "z-image", "qwen-image", "flux2-klein"]
# extra LoRA targets that make a tiny LoRA's keys name its family's own blocks, and a gain where the tiny
# transformer barely moves the picture otherwise
LORA_TARGETS = {"chroma": (), "z-image": (), "qwen-image": ("img_mlp.net.2",), "flux2-klein": ("to_qkv_mlp_proj",)}
LORA_GAIN = {"flux2-klein": 8.0}


@pytest.fixture(scope="module")
def paths(tiny_2026_paths) -> dict[str, str]:
    """The tiny families, FLUX.2 Klein as its base model (the distilled one's defaults are tested by name)."""
    return {f: tiny_2026_paths[f] for f in FAMILIES}


@pytest.fixture(scope="module")
def loras(tmp_path_factory, paths, tiny_flux_path):
    from helpers.tiny_2026_models import write_tiny_lora
    from helpers.tiny_flow_models import write_tiny_flow_lora

    folder = tmp_path_factory.mktemp("loras_2026")
    for family, path in paths.items():
        write_tiny_lora(path, folder / f"{family}-ink.safetensors", extra=LORA_TARGETS[family],
                        gain=LORA_GAIN.get(family, 1.0))
    write_tiny_flow_lora(tiny_flux_path, folder / "flux-ink.safetensors")  # the tiny FLUX.1 is as wide as Chroma
    return folder


@pytest.fixture(scope="module")
def engine(paths, loras):
    with Engine(list(paths.values()), device="cpu", dtype="float32", loras_dir=loras) as eng:
        yield eng


@pytest.fixture(scope="module")
def raw_pipes(paths):
    """Plain diffusers pipelines of each family's own classes, straight from the folders (AutoPipeline has
    no image-to-image or inpaint entry for some of them)."""
    import diffusers

    out = {}
    for name, path in paths.items():
        family = Family(name)
        t2i = getattr(diffusers, family.pipeline_class("txt2img")).from_pretrained(path, dtype=torch.float32)
        if family is Family.CHROMA:  # diffusers' ChromaInpaintPipeline reads a config value its transformer lacks
            t2i.transformer.register_to_config(guidance_embeds=False)
        out[name] = {mode: getattr(diffusers, family.pipeline_class(mode)).from_pipe(t2i) for mode in family.modes}
        for pipe in out[name].values():
            pipe.set_progress_bar_config(disable=True)
        if family.true_cfg:  # the job's guidance is the pipeline's true_cfg_scale
            out[name] = {mode: _TrueCfg(pipe) for mode, pipe in out[name].items()}
    return out


class _TrueCfg:
    """A Qwen-Image pipeline called as the others: ``guidance_scale`` is its ``true_cfg_scale``."""

    def __init__(self, pipe):
        self.pipe = pipe

    def __call__(self, guidance_scale: float, **kwargs):
        return self.pipe(true_cfg_scale=guidance_scale, **kwargs)


# an edit family's jobs with an image are edits, checked in tests/test_klein_edits.py
@pytest.mark.parametrize("family, mode", [(f, m) for f in FAMILIES for m in ("txt2img", "img2img", "inpaint")
                                          if m == "txt2img" or not Family(f).edits])
def test_mode_matches_raw_diffusers_per_seed(engine, raw_pipes, paths, family, mode):
    j = job(mode, model=paths[family], seeds=[3, 11], guidance=4.0)
    images = run(engine, j)
    assert_matches_raw(images, raw_pipes[family][mode], j, SIZE, differ=10)
    assert all(i.info["easel"]["guidance"] == 4.0 for i in images)


CFG_FEATURES = ["negative_prompt", "loras", "variation_seed"]


@pytest.mark.parametrize(("family", "native", "steps", "guidance", "features"), [
    ("chroma", 1024, 40, 3.0, CFG_FEATURES), ("z-image", 1024, 50, 5.0, CFG_FEATURES),
    ("qwen-image", 1328, 50, 4.0, CFG_FEATURES), ("flux2-klein", 1024, 50, 4.0, ["loras", "edit"])])
def test_defaults_and_features(engine, paths, family, native, steps, guidance, features):
    """Defaults of the base models (the tiny Klein is named like FLUX.2-klein-base-4B)."""
    info = engine.model_info(paths[family])
    assert (info.family, info.native, info.default_steps, info.default_guidance) == (family, (native, native), steps,
                                                                                      guidance)
    assert info.features == features and not info.few_step
    (img,) = run(engine, EngineJob(mode="txt2img", prompt="a cat", model=paths[family], width=32, height=32,
                                   steps=None, guidance=None))
    assert (img.info["easel"]["steps"], img.info["easel"]["guidance"]) == (steps, guidance)


@pytest.mark.parametrize(("family", "name", "steps", "guidance"), [
    ("z-image", "Z-Image-Turbo-tiny", 8, 0.0), ("flux2-klein", "FLUX.2-klein-4B-tiny", 4, 1.0)])
def test_few_step_models(paths, tmp_path, family, name, steps, guidance):
    """Z-Image-Turbo (Tongyi-MAI/Z-Image-Turbo) runs 8 steps without CFG; a FLUX.2 Klein not named base
    (black-forest-labs/FLUX.2-klein-4B) is step-distilled: 4 steps, guidance 1, as their model cards say."""
    import shutil

    model = shutil.copytree(paths[family], tmp_path / name)
    with Engine([str(model)], device="cpu", dtype="float32") as eng:
        info = eng.model_info(None)
        assert (info.family, info.default_steps, info.default_guidance, info.few_step) == (family, steps, guidance, True)
        (img,) = run(eng, job(model=None, steps=None, guidance=None, negative_prompt=""))
        assert (img.info["easel"]["steps"], img.info["easel"]["guidance"]) == (steps, guidance)


@pytest.mark.parametrize(("family", "field", "kw", "reason"), [
    ("chroma", "scheduler", {"scheduler": "dpmpp_2m"}, "Chroma runs its own flow-matching scheduler"),
    ("chroma", "control_model", {"control_model": "sketch"}, "sketch ControlNets"),
    ("chroma", "refiner", {"refiner": True}, "the refiner is SDXL's"),
    ("z-image", "scheduler", {"scheduler": "euler_a"}, "Z-Image runs its own flow-matching scheduler"),
    ("z-image", "regions", {"regions": [{"prompt": "sky", "mask": "x"}]}, "Z-Image is a transformer"),
    ("flux2-klein", "negative_prompt", {"negative_prompt": "blurry"}, "FLUX.2 Klein's pipelines take no negative"),
    ("flux2-klein", "variation_seed", {"variation_seed": 4, "variation_strength": 0.5}, "not wired to FLUX.2 Klein"),
])
def test_unsupported_features_are_refused_with_the_reason(engine, paths, family, field, kw, reason):
    with pytest.raises(EngineError) as err:
        run(engine, job(model=paths[family], **kw))
    assert err.value.field == field and err.value.code == "unsupported_feature" and reason in str(err.value)


@pytest.mark.parametrize("family", FAMILIES)
def test_previews_of_the_latents(engine, paths, family):
    events: list = []
    run(engine, job(model=paths[family], preview=True, seeds=[1, 2]), events)
    previews = [e.preview for e in events if e.stage == "denoise" and e.preview is not None]
    assert len(previews) == 3  # one per step
    assert all(p.size == (SIZE // 8 * 2, SIZE // 8 * 2) and p.mode == "RGB" for p in previews)
    assert np.asarray(previews[-1]).std() > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_cancel_within_one_step(engine, paths, family):
    events: list = []
    flag = {"on": False}

    def progress(e):
        events.append(e)
        if e.stage == "denoise" and e.step == 1:
            flag["on"] = True

    with pytest.raises(JobCancelled):
        engine.run(job(model=paths[family], steps=10), progress, lambda: flag["on"])
    assert max(e.step for e in events if e.stage == "denoise") == 1


@pytest.mark.parametrize("family", [f for f in FAMILIES if Family(f).unsupported("variation_seed") is None])
@pytest.mark.parametrize("mode", ["txt2img", "inpaint"])
def test_variation_seeds(engine, paths, family, mode):
    model = paths[family]
    plain = run(engine, job(mode, model=model, seeds=[5, 6]))
    one = run(engine, job(mode, model=model, seeds=[5], variation_seed=9, variation_strength=1.0))
    full = run(engine, job(mode, model=model, seeds=[9]))
    assert np.array_equal(arr(one[0]), arr(full[0]))
    mid = run(engine, job(mode, model=model, seeds=[5, 6], variation_seed=9, variation_strength=0.3))
    again = run(engine, job(mode, model=model, seeds=[6], variation_seed=10, variation_strength=0.3))
    assert_close(mid[1], again[0])  # image i blends seed + i with variation_seed + i
    assert np.abs(arr(mid[0]) - arr(plain[0])).mean() > 0 and np.abs(arr(mid[0]) - arr(one[0])).mean() > 0


def _listed(engine: Engine, family: str):
    """The model list's entry (with its LoRAs) of the model of ``family``."""
    return next(i for i in engine.models() if i.family == family)


# Chroma keeps FLUX.1's blocks (LoRAs of either carry FLUX.1's block names): both are offered to it
LORAS = {"chroma": ["chroma-ink.safetensors", "flux-ink.safetensors"], "z-image": ["z-image-ink.safetensors"],
         "qwen-image": ["qwen-image-ink.safetensors"], "flux2-klein": ["flux2-klein-ink.safetensors"]}


@pytest.mark.parametrize(("family", "name"), [(f, n) for f, names in LORAS.items() for n in names])
def test_loras_are_offered_change_the_picture_and_are_taken_out(engine, paths, family, name):
    assert sorted(_listed(engine, family).loras or []) == LORAS[family]
    (plain,) = run(engine, job(model=paths[family]))
    (with_lora,) = run(engine, job(model=paths[family], loras=[(name, 1.0)]))
    (again,) = run(engine, job(model=paths[family]))
    assert np.abs(arr(plain) - arr(with_lora)).max() > 2 and np.array_equal(arr(plain), arr(again))
    assert with_lora.info["easel"]["features"]["loras"] == [{"name": name, "weight": 1.0}]
    assert Family.FLUX in Family.CHROMA.lora_families and Family.CHROMA not in Family.FLUX.lora_families


def test_a_lora_of_another_family_is_refused(engine, paths):
    with pytest.raises(EngineError) as err:
        run(engine, job(model=paths["z-image"], loras=[("chroma-ink.safetensors", 1.0)]))
    assert err.value.field == "loras" and "is for FLUX.1" in str(err.value) and "Z-Image" in str(err.value)


def test_hub_names_and_unknown_classes():
    from easel.server.engine.loading import check_supported
    from easel.server.traits import guess

    chroma, turbo, qwen = guess("lodestones/Chroma1-HD"), guess("Tongyi-MAI/Z-Image-Turbo"), guess("Qwen/Qwen-Image")
    klein, base = guess("black-forest-labs/FLUX.2-klein-9B"), guess("black-forest-labs/FLUX.2-klein-base-4B")
    assert (klein.family, klein.default_steps, klein.few_step, base.default_steps) == ("flux2-klein", 4, True, 50)
    assert (qwen.family, qwen.native, qwen.default_guidance) == ("qwen-image", (1328, 1328), 4.0)
    assert (chroma.family, chroma.default_steps, chroma.default_guidance) == ("chroma", 40, 3.0)
    assert (turbo.family, turbo.default_steps, turbo.default_guidance, turbo.few_step) == ("z-image", 8, 0.0, True)
    with pytest.raises(EngineError) as err:
        check_supported({"_class_name": "WanPipeline"}, "wan")
    assert "Chroma, Z-Image, Qwen-Image, Qwen-Image-Edit, Qwen-Image-Edit-Plus, FLUX.2 Klein" in str(err.value)
    assert err.value.field == "model"


@pytest.mark.parametrize("family", [f for f in FAMILIES if Family(f).tiny_vae])
def test_tiny_decoder(hub_cache, paths, raw_pipes, tmp_path, family):
    """--decoder tiny: FLUX.1's TAESD decoder (taef1; Chroma's latents unpacked), as raw diffusers with its
    VAE swapped."""
    from diffusers import AutoencoderTiny

    from helpers.tiny_models import make_fake_hub_cache

    torch.manual_seed(0)
    AutoencoderTiny(latent_channels=16).save_pretrained(tmp_path / "taef1")
    make_fake_hub_cache(str(tmp_path / "taef1"), hub_cache, Family(family).tiny_vae)
    j = job(model=paths[family], seeds=[3], steps=2, guidance=4.0)
    with Engine([paths[family]], device="cpu", dtype="float32", decoder="tiny") as eng:
        (img,) = run(eng, j)
    pipe = raw_pipes[family]["txt2img"]
    full = raw_call(pipe, j, 3)
    vae, pipe.vae = pipe.vae, AutoencoderTiny.from_pretrained(tmp_path / "taef1")
    try:
        assert np.array_equal(arr(img), arr(raw_call(pipe, j, 3)))
    finally:
        pipe.vae = vae
    assert np.abs(arr(img) - arr(full)).max() > 10
