"""One job on one loaded model: parameters, scheduler, seeds, progress, previews and cancel.

Each result image carries what was actually used in ``image.info["easel"]`` (model, mode, seed,
steps, guidance, scheduler, strength), since steps may be raised for low strengths.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from .device import free_memory
from .loading import LoadedModel
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


def validate(job: EngineJob, vae_scale: int = 8) -> None:
    """EngineError naming the field for anything the pipeline would reject or get wrong."""
    if job.mode not in MODES:
        raise EngineError(f"unknown mode {job.mode!r}; use one of {', '.join(MODES)}", field="mode")
    if not job.seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in job.seeds):
        raise EngineError("seeds must be a non-empty list of integers (one image per seed)", field="seed")
    for name in ("width", "height"):
        value = getattr(job, name)
        if not isinstance(value, int) or value < vae_scale or value % vae_scale:
            near = max(vae_scale, round(value / vae_scale) * vae_scale) if isinstance(value, (int, float)) else 512
            raise EngineError(f"{name} {value} must be a positive multiple of {vae_scale} (the VAE's scale factor); "
                              f"use {near}", field=name)
    if job.steps is not None and not 1 <= job.steps <= MAX_STEPS:
        raise EngineError(f"steps must be between 1 and {MAX_STEPS} (got {job.steps})", field="steps")
    if job.guidance is not None and not (job.guidance >= 0 and math.isfinite(job.guidance)):
        raise EngineError(f"guidance must be a number >= 0 (got {job.guidance})", field="guidance")
    if job.mode != "txt2img":
        if not 0.0 <= job.strength <= 1.0:
            raise EngineError(f"strength must be between 0 and 1 (got {job.strength})", field="strength")
        _check_image(job.image, "image", job)
    if job.mode == "inpaint":
        _check_image(job.mask, "mask", job)


def _check_image(image: Image.Image | None, name: str, job: EngineJob) -> None:
    if image is None:
        raise EngineError(f"{job.mode} needs an {name}", field=name)
    if image.size != (job.width, job.height):
        raise EngineError(f"{name} is {image.width}x{image.height} but the job is {job.width}x{job.height}; "
                          "resize it to the job size first", field=name)


def plan(job: EngineJob, default_steps: int, default_guidance: float) -> Plan:
    """Steps/guidance/strength to use; raises steps so that steps x strength gives >= 1 denoising step."""
    steps = job.steps if job.steps is not None else default_steps
    guidance = float(job.guidance) if job.guidance is not None else default_guidance
    strength = 1.0 if job.mode == "txt2img" else float(job.strength)
    note = ""
    if 0 < strength < 1 and int(steps * strength) < 1:
        needed = math.ceil(1 / strength)
        while int(needed * strength) < 1:
            needed += 1
        note = (f"steps raised from {steps} to {needed}: with strength {strength:g} fewer steps would make "
                "no denoising step at all")
        steps = needed
    return Plan(steps, guidance, strength, note)


def run_job(lm: LoadedModel, job: EngineJob, progress: ProgressFn, cancelled: CancelledFn) -> list[Image.Image]:
    """Run ``job`` on ``lm``: RGB images of job.width x job.height, one per seed, in seed order."""
    validate(job, lm.traits.vae_scale)
    p = plan(job, lm.traits.default_steps, lm.traits.default_guidance)
    info = {"model": lm.ref.id, "mode": job.mode, "steps": p.steps, "guidance": p.guidance,
            "scheduler": job.scheduler, "strength": p.strength}
    if job.mode != "txt2img" and p.strength <= 0:  # nothing to denoise: the input comes back
        return [_tag(job.image.convert("RGB"), info, seed) for seed in job.seeds]
    pipe = lm.pipeline(job.mode)
    original = pipe.scheduler
    scheduler = make_scheduler(job.scheduler, original)
    info["scheduler"] = job.scheduler or type(scheduler).__name__
    if p.note:
        estimate = p.steps if job.mode == "txt2img" else max(1, int(p.steps * p.strength))
        progress(Progress("denoise", 0, estimate, p.note))

    # Inpaint pipelines sample every image's VAE latents from the first generator, so a batch would not
    # reproduce per-seed results there: inpaint runs one image per call. Others batch all seeds at once.
    one_by_one = job.mode == "inpaint" or lm.traits.inpaint_unet
    groups = [[seed] for seed in job.seeds] if one_by_one else [list(job.seeds)]
    done = {"group": 0}

    def on_step(pipeline: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        if cancelled():
            raise JobCancelled()
        if not bool(torch.isfinite(tensors["latents"]).all()):
            raise EngineError(NAN_MESSAGE, code="nan")
        preview = None
        if job.preview and lm.preview is not None:
            preview = lm.preview.render(tensors["latents"])
        n = int(pipeline.num_timesteps)
        progress(Progress("denoise", done["group"] * n + i + 1, len(groups) * n, preview=preview))
        if cancelled():  # a cancel that came in while progress was being reported
            raise JobCancelled()
        return {}

    accepted = inspect.signature(pipe.__call__).parameters
    images: list[Image.Image] = []
    if cancelled():
        raise JobCancelled()
    def generate_all() -> list[Image.Image]:
        out: list[Image.Image] = []
        for k, seeds in enumerate(groups):
            done["group"] = k
            pipe.scheduler = make_scheduler(job.scheduler, original)
            kwargs = _call_kwargs(lm, job, p, seeds, on_step)
            arrays = pipe(**{key: v for key, v in kwargs.items() if key in accepted}).images
            out += [_to_pil(a) for a in arrays]
        return out

    try:
        try:
            images = generate_all()
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            # Out of memory: free what we can, turn on memory savers for this model, try once more.
            savers = enable_memory_savers(pipe)
            free_memory(str(getattr(pipe, "device", "cpu")), collect=True)
            progress(Progress("denoise", 0, 0, f"out of memory; retrying with {', '.join(savers)}"))
            images = generate_all()
    except Exception as exc:
        if is_out_of_memory(exc):
            raise EngineError("out of memory even with attention slicing and VAE tiling: use a smaller size or "
                              "fewer images, or start the server with --cpu-offload", field="width",
                              code="out_of_memory") from None
        if isinstance(exc, ValueError):
            raise EngineError(f"the pipeline rejected the job: {exc}", field=None) from exc
        raise
    finally:
        pipe.scheduler = original
    if len(images) != len(job.seeds):
        raise RuntimeError(f"pipeline returned {len(images)} images for {len(job.seeds)} seeds")
    return [_tag(img.convert("RGB"), info, seed) for img, seed in zip(images, job.seeds)]


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
    }
    image, mask, strength = job.image, job.mask, p.strength
    if lm.traits.inpaint_unet and job.mode != "inpaint":  # 9-channel UNet: regenerate everything
        image = image if image is not None else Image.new("RGB", size, (127, 127, 127))
        mask = Image.new("L", size, 255)
    if image is not None and (job.mode != "txt2img" or lm.traits.inpaint_unet):
        kwargs.update(image=image.convert("RGB"), strength=strength)
    if mask is not None and (job.mode == "inpaint" or lm.traits.inpaint_unet):
        kwargs["mask_image"] = mask.convert("L")
    return kwargs


NAN_MESSAGE = ("the model produced NaN values (often float16 overflow in the UNet or VAE); "
               "start the server with --dtype float32 or bfloat16, or use a fixed VAE")


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA/MPS out-of-memory errors and the CPU allocator's 'not enough memory'."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "not enough memory" in text)


def enable_memory_savers(pipe: Any) -> list[str]:
    """Attention slicing and VAE tiling on a pipeline (shared by all modes via from_pipe)."""
    pipe.enable_attention_slicing()
    pipe.vae.enable_tiling()
    return ["attention slicing", "VAE tiling"]


def _to_pil(array: Any) -> Image.Image:
    """One HxWx3 float image in [0, 1] to PIL, exactly as diffusers' numpy_to_pil; NaN is an error."""
    import numpy as np

    if not np.isfinite(array).all():
        raise EngineError(NAN_MESSAGE, code="nan")
    return Image.fromarray((array * 255).round().astype("uint8"))


def _tag(image: Image.Image, info: dict[str, Any], seed: int) -> Image.Image:
    image.info["easel"] = {**info, "seed": seed}
    return image
