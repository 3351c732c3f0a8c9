"""One job on one loaded model: parameters, scheduler, seeds, progress, previews and cancel.

Each result image carries what was actually used in ``image.info["easel"]`` (model, mode, seed,
steps, guidance, scheduler, strength, and the power features in ``features``), since steps may be
raised for low strengths. ``Extras`` brings what the engine loaded for the job's power features
(docs/features.md): a ControlNet and the SDXL refiner; variations are done here.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from ...client.codes import ErrorCode
from ...client.fields import FieldError
from ...client.protocol import REFERENCE_KINDS, request_fields
from . import flow, openvino_path, regional, tiny_vae, variations
from . import refiner as refine
from .controlnet import ControlLayer, control_kwargs, control_pipeline, control_rng, per_seed
from .device import free_memory
from .edit_images import EditImage
from .loading import LoadedModel
from .oom import is_out_of_memory
from .redux import ReduxLayer
from .references import ReferenceLayer, attach, detach, reference_kwargs
from .schedulers import make_scheduler
from .types import CancelledFn, EngineError, EngineJob, JobCancelled, Progress, ProgressFn

MODES = ("txt2img", "img2img", "inpaint")
MAX_STEPS = 1000


@dataclass(frozen=True)
class Plan:
    steps: int
    guidance: float
    strength: float
    note: str = ""  # why a parameter differs from what the job asked


@dataclass
class Extras:
    """Models the engine loaded for this job's power features."""

    controls: list[ControlLayer] = field(default_factory=list)  # the control layers that steer
    references: list[ReferenceLayer] | list[ReduxLayer] | list[EditImage] = field(default_factory=list)  # reference layers that steer
    refiner: LoadedModel | None = None
    decoder: Any = None  # the tiny VAE that decodes the result (tiny_vae.py); None: the pipeline's own VAE


def validate(job: EngineJob, vae_scale: int = 8, why: str = "the VAE's scale factor") -> None:
    """EngineError naming the field for anything the pipeline would reject or get wrong."""
    if job.mode not in MODES:
        raise EngineError(f"unknown mode {job.mode!r}; use one of {', '.join(MODES)}", field="mode")
    if not job.seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in job.seeds):
        raise EngineError("seeds must be a non-empty list of integers (one image per seed)", field="seed")
    for name in ("width", "height"):
        value = getattr(job, name)
        if not isinstance(value, int) or value < vae_scale or value % vae_scale:
            near = max(vae_scale, round(value / vae_scale) * vae_scale) if isinstance(value, (int, float)) else 512
            raise EngineError(f"{name} {value} must be a positive multiple of {vae_scale} ({why}); "
                              f"use {near}", field=name)
    if job.steps is not None and not 1 <= job.steps <= MAX_STEPS:
        raise EngineError(f"steps must be between 1 and {MAX_STEPS} (got {job.steps})", field="steps")
    _check_declared(job, "guidance")
    if job.mode != "txt2img":
        _check_declared(job, "strength")
        _check_image(job.image, "image", job)
    if job.mode == "inpaint":
        _check_image(job.mask, "mask", job)
    if job.control_model is not None:
        if job.control_image is None:
            raise EngineError("a control model needs a control image: send the sketch as attachment 'control'",
                              field="control")
        _check_image(job.control_image, "control", job)
        _check_declared(job, "control_strength")
    if job.variation_seed is not None:
        _check_declared(job, "variation_strength")
    if job.refiner:
        _check_declared(job, "refiner_switch")


def _check_declared(job: EngineJob, name: str) -> None:
    """The job's ``name`` against the protocol's declaration of that request field (one range for both)."""
    try:
        request_fields()[name].check(getattr(job, name))
    except FieldError as exc:
        raise EngineError(str(exc), field=name) from None


def _check_image(image: Image.Image | None, name: str, job: EngineJob) -> None:
    if image is None:
        raise EngineError(f"{job.mode} needs an {name}", field=name)
    if image.size != (job.width, job.height):
        raise EngineError(f"{name} is {image.width}x{image.height} but the job is {job.width}x{job.height}; "
                          "resize it to the job size first", field=name)


def plan(job: EngineJob, default_steps: int, default_guidance: float, edit: bool = False) -> Plan:
    """Steps/guidance/strength to use; raises steps so that steps x strength gives >= 1 denoising step.
    An ``edit`` model (FLUX.1 Kontext, FLUX.2 Klein) takes the image as context and denoises from pure noise: strength 1."""
    steps = job.steps if job.steps is not None else default_steps
    guidance = float(job.guidance) if job.guidance is not None else default_guidance
    strength = 1.0 if job.mode == "txt2img" or edit else float(job.strength)
    note = ""
    if 0 < strength < 1 and int(steps * strength) < 1:
        needed = math.ceil(1 / strength)
        while int(needed * strength) < 1:
            needed += 1
        note = (f"steps raised from {steps} to {needed}: with strength {strength:g} fewer steps would make "
                "no denoising step at all")
        steps = needed
    return Plan(steps, guidance, strength, note)


def run_job(lm: LoadedModel, job: EngineJob, progress: ProgressFn, cancelled: CancelledFn,
            extras: Extras | None = None) -> list[Image.Image]:
    """Run ``job`` on ``lm``: RGB images of job.width x job.height, one per seed, in seed order."""
    extras = extras or Extras()
    validate(job, lm.traits.vae_scale)
    region_masks = regional.job_masks(job)  # a missing or wrong-sized mask fails before any loading
    if job.width % lm.traits.size_step or job.height % lm.traits.size_step:
        return flow.run_rounded(lambda j: run_job(lm, j, progress, cancelled, extras), job, lm.traits.size_step)
    p = plan(job, lm.traits.default_steps, lm.traits.default_guidance, lm.traits.family.edits)
    info = {"model": lm.ref.id, "mode": job.mode, "steps": p.steps, "guidance": p.guidance,
            "scheduler": job.scheduler, "strength": p.strength}
    features = job_features(job, extras)
    if features:
        info["features"] = features
    if job.mode != "txt2img" and p.strength <= 0:  # nothing to denoise: the input comes back
        return [_tag(job.image.convert("RGB"), info, seed) for seed in job.seeds]
    if extras.controls:
        pipe = control_pipeline(lm, job.mode, extras.controls)
    else:
        pipe = lm.pipeline(job.mode)
    original = pipe.scheduler
    make_scheduler(job.scheduler, original)  # an unknown or unfitting name fails here, before any progress
    info["scheduler"] = job.scheduler or type(original).__name__
    expected = p.steps if job.mode == "txt2img" else max(1, int(p.steps * p.strength))
    if p.note:
        progress(Progress("denoise", 0, expected, p.note))

    # Inpaint pipelines sample every image's VAE latents from the first generator, so a batch would not
    # reproduce per-seed results there: inpaint runs one image per call, and so do some ControlNet jobs
    # (controlnet.per_seed). Others batch all seeds at once.
    one_by_one = job.mode == "inpaint" or lm.traits.inpaint_unet or per_seed(extras.controls, job.mode)
    run_seeds, blend = variation_plan(job)
    groups = [[seed] for seed in run_seeds] if one_by_one else [list(run_seeds)]
    compiling = lm.compiled.note(job.mode, job.width, job.height, len(groups[0])) if lm.compiled else ""
    if compiling:
        progress(Progress("denoise", 0, expected, compiling))
    # per group: base steps (known once it runs), refiner steps (estimated until the refiner runs)
    count = {"group": 0, "base": 0, "stage": "base"}

    def on_step(pipeline: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        if cancelled():
            raise JobCancelled()
        if not bool(torch.isfinite(tensors["latents"]).all()):
            raise EngineError(NAN_MESSAGE, code=ErrorCode.NAN)
        preview = None
        if job.preview and lm.preview is not None:
            preview = lm.preview.render(flow.spatial_latents(pipeline, tensors["latents"], job.width, job.height))
        n = int(pipeline.num_timesteps)
        if count["stage"] == "base":
            count["base"] = n
            per_group = n + (max(1, expected - n) if extras.refiner is not None else 0)
            step = i + 1
        else:  # refiner
            per_group = count["base"] + n
            step = count["base"] + i + 1
        progress(Progress("denoise", count["group"] * per_group + step, len(groups) * per_group, preview=preview))
        if cancelled():  # a cancel that came in while progress was being reported
            raise JobCancelled()
        return {}

    accepted = inspect.signature(pipe.__call__).parameters
    if cancelled():
        raise JobCancelled()

    def generate_all() -> list[Image.Image]:
        out: list[Image.Image] = []
        for k, seeds in enumerate(groups):
            count.update(group=k, stage="base")
            pipe.scheduler = make_scheduler(job.scheduler, original)
            kwargs = _call_kwargs(lm, job, p, seeds, on_step)
            if extras.decoder is not None:  # latents out, decoded below
                kwargs["output_type"] = "latent"
            if lm.traits.family.unsupported("negative_prompt"):  # FLUX.1: guidance-distilled, no CFG pass
                kwargs.pop("negative_prompt", None)
            if lm.traits.family.true_cfg:  # Qwen-Image: CFG runs only with a negative prompt
                kwargs.update(true_cfg_scale=kwargs.pop("guidance_scale"),
                              negative_prompt=kwargs["negative_prompt"] or " ")
            if lm.traits.flow and "image" in kwargs and len(seeds) > 1 and not lm.traits.family.edits:
                # SD3/Flux img2img encode the image once per *input* image with generator[i]: one copy per
                # seed, so image i's VAE sample comes from its own seed (as in a batch-1 run). Edit pipelines
                # encode their pictures without sampling, and a list is several pictures there (Qwen-Image-Edit)
                kwargs["image"] = [kwargs["image"]] * len(seeds)
            if extras.controls:
                kwargs.update(control_kwargs(accepted, extras.controls))
            if extras.references:
                kwargs.update(reference_kwargs(extras.references, pipe, kwargs))
            if blend is not None:
                kwargs.update(_variation_kwargs(pipe, job, p, kwargs, seeds, [blend[s] for s in seeds], accepted))
            if extras.refiner is not None:
                kwargs.update(refine.base_kwargs(job.refiner_switch))
            call, masks = kwargs, None
            if region_masks is not None:  # the blocks' embeddings for this call only (the refiner: base prompt)
                prompts, masks = regional.encode(pipe, job, region_masks)
                call = {**kwargs, **prompts}
            with control_rng(extras.controls, seeds[0]), regional.applied(pipe, masks), \
                    openvino_path.applied(lm.openvino, openvino_path.usable(job, extras), progress):
                result = pipe(**{key: v for key, v in call.items() if key in accepted}).images
            if extras.refiner is not None:
                count["stage"] = "refiner"
                result = _refine(extras.refiner, job, kwargs, result, latent=extras.decoder is not None)
            if extras.decoder is not None:
                result = tiny_vae.decode(pipe, extras.decoder, result, job.width, job.height)
            out += [_to_pil(a) for a in result]
        return out

    adapters = attach(pipe, extras.references)  # taken out again below: later jobs keep their pixels
    try:
        try:
            images: list[Image.Image] = generate_all()
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            # Out of memory: free what we can, turn on memory savers for this model, try once more
            # (the job's adapters taken out meanwhile: slicing replaces the attention processors).
            detach(pipe, adapters)
            adapters = None
            savers = enable_memory_savers(pipe)
            adapters = attach(pipe, extras.references)
            free_memory(str(getattr(pipe, "device", "cpu")), collect=True)
            progress(Progress("denoise", 0, 0, f"out of memory; retrying with {', '.join(savers)}"))
            images = generate_all()
    except Exception as exc:
        if is_out_of_memory(exc):
            raise EngineError("out of memory even with attention slicing and VAE tiling: use a smaller size or "
                              "fewer images, or start the server with --cpu-offload", field="width",
                              code=ErrorCode.OUT_OF_MEMORY) from None
        if isinstance(exc, ValueError):
            raise EngineError(f"the pipeline rejected the job: {exc}", field=None) from exc
        raise
    finally:
        pipe.scheduler = original
        detach(pipe, adapters)
    if len(images) != len(job.seeds):
        raise RuntimeError(f"pipeline returned {len(images)} images for {len(job.seeds)} seeds")
    out = [_tag(img.convert("RGB"), info, seed) for img, seed in zip(images, job.seeds)]
    if "variation_seed" in features:
        for i, img in enumerate(out):
            img.info["easel"]["variation_seed"] = (job.variation_seed + i) % 2**63
    return out


def job_features(job: EngineJob, extras: Extras) -> dict[str, Any]:
    """The power features a job used, for its parameters (only those in use)."""
    out: dict[str, Any] = {}
    if job.loras:
        out["loras"] = [{"name": name, "weight": float(weight)} for name, weight in job.loras]
    ran = iter([layer.id for layer in extras.controls])  # the guide's layer, then each steering control's
    if extras.controls and job.control_model is not None and job.control_strength > 0:  # the guide's layer
        out.update(control_model=next(ran), control_strength=float(job.control_strength))
    if job.controls:  # the ControlNet each layer ran with (strength 0: none ran; the one it named, if any)
        used = [(next(ran, None) if c.strength > 0 and c.kind not in REFERENCE_KINDS else None) or c.model
                for c in job.controls]
        out["controls"] = [{"kind": c.kind, "strength": c.strength, "start": c.start, "end": c.end,
                            **({"model": model} if model else {})} for c, model in zip(job.controls, used)]
    if job.regions:
        out["regions"] = [{"prompt": r.prompt, **({"negative_prompt": r.negative_prompt} if r.negative_prompt else {})}
                          for r in job.regions]
    if job.variation_seed is not None and job.variation_strength > 0:
        out.update(variation_seed=job.variation_seed, variation_strength=float(job.variation_strength))
    if extras.refiner is not None:
        out.update(refiner=extras.refiner.ref.id, refiner_switch=float(job.refiner_switch))
    if extras.decoder is not None:
        out["decoder"] = "tiny"
    return out


def variation_plan(job: EngineJob) -> tuple[list[int], dict[int, int] | None]:
    """The seeds to run, and (for a real blend) each run seed's variation seed.

    Strength 0 runs the plain seeds and strength 1 the variation seeds (both plain runs, bit-exact).
    """
    if job.variation_seed is None or job.variation_strength <= 0:
        return list(job.seeds), None
    partners = [(job.variation_seed + i) % 2**63 for i in range(len(job.seeds))]
    if job.variation_strength >= 1:
        return partners, None
    return list(job.seeds), dict(zip(job.seeds, partners))


def _variation_kwargs(pipe: Any, job: EngineJob, p: Plan, kwargs: dict[str, Any], seeds: list[int],
                      partners: list[int], accepted: Any) -> dict[str, Any]:
    """Blended initial noise: as ``latents=`` where the pipeline starts from pure noise, else via add_noise."""
    strength = job.variation_strength
    pure_noise = job.mode == "txt2img" or (job.mode == "inpaint" and p.strength >= 1)
    if flow.is_flux(pipe):  # Flux inpaint always re-noises through scale_noise, even at strength 1
        pure_noise = job.mode == "txt2img"
    if not pure_noise or "latents" not in accepted:
        variations.blend_scheduler_noise(pipe.scheduler, partners, strength, flow.packer(pipe, job.width, job.height))
        return {}
    gens = kwargs["generator"]
    if "mask_image" in kwargs and flow.in_channels(pipe) in (4, 16):
        # 4-channel inpainting draws the image's VAE sample first and its noise second: blend that second
        # draw (from copies, so the pipeline's generators go on as in a plain run)
        gens = variations.generators(seeds)
        variations.skip_noise(pipe, gens, job.width, job.height)
    latents = variations.blended_latents(pipe, gens, partners, strength, job.width, job.height)
    pack = flow.packer(pipe, job.width, job.height)
    return {"latents": pack(latents) if pack else latents}


def _refine(lm: LoadedModel, job: EngineJob, kwargs: dict[str, Any], latents: Any, latent: bool = False) -> Any:
    """The refiner's part of the denoising, from the base model's latents; float images (``latent``: latents)."""
    rpipe = lm.pipeline("inpaint" if job.mode == "inpaint" else "img2img")
    original = rpipe.scheduler
    rpipe.scheduler = make_scheduler(job.scheduler, original)
    try:
        rkwargs = refine.refiner_kwargs(kwargs, latents, job.refiner_switch)
        if latent:
            rkwargs["output_type"] = "latent"
        accepted = inspect.signature(rpipe.__call__).parameters
        return rpipe(**{key: v for key, v in rkwargs.items() if key in accepted}).images
    finally:
        rpipe.scheduler = original


def _call_kwargs(lm: LoadedModel, job: EngineJob, p: Plan, seeds: list[int], on_step: Any) -> dict[str, Any]:
    size = (job.width, job.height)
    kwargs: dict[str, Any] = {
        "prompt": job.prompt, "negative_prompt": job.negative_prompt or None,
        "num_inference_steps": p.steps, "guidance_scale": p.guidance,
        "num_images_per_prompt": len(seeds),
        # one CPU generator per image: image i equals a batch-1 run with seeds[i], on any device
        "generator": [torch.Generator("cpu").manual_seed(s & 0xFFFF_FFFF_FFFF_FFFF) for s in seeds],
        "width": job.width, "height": job.height,  # always: inpaint pipelines default to the native size
        "output_type": "np",  # float arrays: NaNs are caught before they become black pixels
        "callback_on_step_end": on_step, "callback_on_step_end_tensor_inputs": ["latents"],
        # FLUX.1 Kontext rescales to max_area (1024² by default) and, auto-resizing, to its preferred sizes:
        # the size of the job instead (other pipelines do not take these: the call leaves them out)
        "max_area": job.width * job.height, "_auto_resize": False,
    }
    image, mask, strength = job.image, job.mask, p.strength
    if lm.traits.inpaint_unet and job.mode != "inpaint":  # 9-channel UNet: regenerate everything
        image = image if image is not None else Image.new("RGB", size, (127, 127, 127))
        mask = Image.new("L", size, 255)
    if image is not None and (job.mode != "txt2img" or lm.traits.inpaint_unet):
        kwargs.update(image=image.convert("RGB"), strength=strength)
    if mask is not None and (job.mode == "inpaint" or lm.traits.inpaint_unet) and lm.traits.family.inpaint_pipeline:
        kwargs["mask_image"] = mask.convert("L")  # not for an edit family without one: its edit pipeline runs
    return kwargs


NAN_MESSAGE = ("the model produced NaN values (often float16 overflow in the UNet or VAE); "
               "start the server with --dtype float32 or bfloat16, or use a fixed VAE")


def enable_memory_savers(pipe: Any) -> list[str]:
    """Attention slicing and VAE tiling on a pipeline (shared by all modes via from_pipe)."""
    if hasattr(pipe, "enable_attention_slicing"):  # UNet pipelines; SD3/Flux transformers have none
        pipe.enable_attention_slicing()
    pipe.vae.enable_tiling()
    return ["attention slicing", "VAE tiling"]


def _to_pil(array: Any) -> Image.Image:
    """One HxWx3 float image in [0, 1] to PIL, exactly as diffusers' numpy_to_pil; NaN is an error."""
    import numpy as np

    if not np.isfinite(array).all():
        raise EngineError(NAN_MESSAGE, code=ErrorCode.NAN)
    return Image.fromarray((array * 255).round().astype("uint8"))


def _tag(image: Image.Image, info: dict[str, Any], seed: int) -> Image.Image:
    image.info["easel"] = {**info, "seed": seed}
    return image
