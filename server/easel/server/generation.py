"""One generation, end to end: decode inputs, plan the work, run the engine, build layers.

Runs on the worker thread. The app hands it a validated ``GenerateRequest`` and the decoded
attachments; it returns result layers (RGBA + document offset) ready to encode.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from ..client.fields import attachment_names
from ..client.protocol import GenerateRequest, Image, ProtocolError
from .background import DEFAULT_MODEL
from .codec import decode_mask, decode_rgba
from .engine.types import CancelledFn, EngineAPI, JobCancelled, ModelInfo, ProgressFn
from .features import check_control, prepare_attached, prepare_control, used_parameters
from .hires import SecondPass, second_pass_wanted, skipped_note
from .imaging.compose import composite, prepare
from .limits import Limits
from .prompt_regions import check_regions
from .selection_modes import check_modes, inpaint_model, setup_mode
from .upscale import check_upscale, run_upscale
from .work import GenerationOutput, Inputs, Layer, StepBar, engine_job, engine_steps, pick_seeds

FIXED_ATTACHMENTS = ("image", "mask", "control")


def check_named_attachments(request: Any, images: dict[str, Image]) -> list[str]:
    """The attachments the request's lists name (``Spec.attachment``), each sent; no others beyond
    ``FIXED_ATTACHMENTS``. Returns those names."""
    named = attachment_names(request)
    unknown = sorted(set(images) - {*FIXED_ATTACHMENTS, *named})
    if unknown:
        lists = ", the ones the request's lists name" if named else ""
        raise ProtocolError(f"unknown attachment {unknown[0]!r}; send 'image' and optionally 'mask' and 'control'"
                            f"{lists}", field=unknown[0])
    missing = [name for name in named if name not in images]
    if missing:
        raise ProtocolError(f"the request names attachment {missing[0]!r} but did not send it; send that image "
                            "with the message (its name in 'attachments')", field=missing[0])
    return named


def check_attachments(request: GenerateRequest, images: dict[str, Image], limits: Limits) -> None:
    """Cheap checks from the image headers alone (done at submit time, before queueing)."""
    check_named_attachments(request, images)
    image, mask = images.get("image"), images.get("mask")
    if mask is not None and image is None:
        raise ProtocolError("'mask' needs an 'image' to regenerate; send the canvas as 'image' too", field="mask")
    for name, img in images.items():
        limits.check_size(img.width, img.height, name)
    check_control(request, images)
    check_regions(request, images)
    if image is not None and mask is not None and (image.width, image.height) != (mask.width, mask.height):
        raise ProtocolError(f"'mask' is {mask.width}x{mask.height} but 'image' is {image.width}x{image.height}; "
                            "send a mask of the same size as the image", field="mask")
    if request.upscale is not None:
        check_upscale(request, images, limits)
    check_modes(request, images, limits)


def decode_inputs(request: GenerateRequest, images: dict[str, Image], limits: Limits) -> Inputs:
    """Check and decode the attachments; raises ProtocolError naming the field."""
    check_attachments(request, images, limits)
    image, mask = images.get("image"), images.get("mask")
    control = decode_rgba(images["control"], "control") if "control" in images else None
    attached = {name: decode_rgba(images[name], name) for name in attachment_names(request)}
    if image is None:
        return Inputs("txt2img", control=control, attached=attached)
    rgba = decode_rgba(image, "image")
    if mask is None:
        return Inputs("img2img", rgba, control=control, attached=attached)
    return Inputs("inpaint", rgba, decode_mask(mask, "mask"), control=control, attached=attached)


def run_generation(engine: EngineAPI, request: GenerateRequest, inputs: Inputs, model: ModelInfo,
                   progress: ProgressFn, cancelled: CancelledFn) -> GenerationOutput:
    """Plan the work region, run the engine at working size (and the second pass when the region is
    well above it, ``hires``), composite layers in document coordinates. One progress bar counts both passes."""
    if request.upscale is not None:
        return run_upscale(engine, request, inputs, model, progress, cancelled)
    t0 = time.perf_counter()
    seeds = pick_seeds(request.seed, request.batch)
    if model.family.edits and request.inpaint_mode == "auto" and not request.expand:  # an edit sees the pixels
        request = replace(request, inpaint_mode="refine")
    setup = setup_mode(request, inputs.image, inputs.mask,  # the selection mode: its picture, prompt, strength
                       getattr(engine, "background_model", DEFAULT_MODEL))
    chosen, inpainter = model.id, inpaint_model(engine, model, setup.mode)
    model = inpainter or model  # a fill, expand or remove job on a served inpainting model of its family
    request, plan = setup.request, setup.plan(model.native)
    model_image = setup.prepared(plan)
    work_image, work_mask = prepare(plan, model_image, setup.mask)
    job = engine_job(request, mode=plan.mode, model=model.id, seeds=seeds, width=plan.work.width,
                     height=plan.work.height, image=work_image, mask=work_mask,
                     control_image=prepare_control(plan, inputs.control),
                     attached=prepare_attached(plan, request.controls, inputs.attached))
    second = None
    if second_pass_wanted(request, plan, model.family):
        second = SecondPass(engine, request, model, plan, model_image, setup.mask, seeds, inputs.attached)
    note = skipped_note(request, plan, model.family)  # shown with every first-pass step, kept in the result
    first = engine_steps(job, model)
    bar = StepBar(progress, first + (second.total if second is not None else 0))
    t1 = time.perf_counter()
    results = engine.run(job, bar.begin(first, note or ""), cancelled)
    t2 = time.perf_counter()
    final: list[Any] = list(results)
    features = used_parameters(results)
    if second is not None:
        if cancelled():
            raise JobCancelled()
        final, flagged = second.run(results, bar, cancelled)
        if flagged is not None:
            features["nsfw"] = flagged
    t3 = time.perf_counter()
    layers = []
    for seed, img in zip(seeds, final, strict=True):
        layer = setup.keep(plan, composite(plan, setup.image, setup.mask, setup.match(plan, img)))
        layers.append(Layer(layer.rgba, layer.x, layer.y, seed))
    used = results[0].info.get("easel", {}) if results else {}  # what the engine really used
    parameters = {
        "model": chosen, "prompt": request.prompt, "negative_prompt": request.negative_prompt,
        "steps": used.get("steps", job.steps or model.default_steps),
        "guidance": used.get("guidance", job.guidance if job.guidance is not None else model.default_guidance),
        "scheduler": used.get("scheduler") or request.scheduler or "default",
        "strength": used.get("strength", request.strength), "seeds": seeds, **plan.to_dict(),
        **features, **request_choices(request), **setup.parameters(),
    }
    if inpainter is not None:
        parameters["inpaint_model"] = inpainter.id
    if second is not None:
        parameters["second_pass"] = second.parameters()
    if note:
        parameters["notes"] = [note]
    timings = {"prepare_s": t1 - t0, "run_s": t2 - t1, "compose_s": time.perf_counter() - t3}
    if second is not None:
        timings["second_pass_s"] = t3 - t2
    return GenerationOutput(layers, parameters, timings)


def request_choices(request: GenerateRequest) -> dict[str, Any]:
    """The second-pass and size choices a request made, when not the defaults (to run it again)."""
    out: dict[str, Any] = {}
    if request.hires != "auto":
        out["hires"] = request.hires
    if request.hires_strength is not None:
        out["hires_strength"] = request.hires_strength
    if request.exact_size:
        out["exact_size"] = True
    return out
