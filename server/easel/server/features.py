"""Power-feature inputs of a ``generate`` request (docs/features.md): checks of the names it uses
(LoRAs, control model, control layers' kinds, refiner) and of the control images, which it prepares at
work size.

A control image (attachment ``control``, or a control layer's in ``controls``) covers the same pixels as
``image``: it has the image's size (text to image: the requested size, ``width`` x ``height`` or the model's native size), and
is cropped and scaled with the same work plan, so the sketch lines up with the region the model
paints. Transparent control pixels count as black (no line, in the white-on-black convention of
scribble, line-art and canny ControlNets).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image as PILImage

from ..client.codes import ErrorCode
from ..client.protocol import REFERENCE_KINDS, GenerateRequest, Image, ProtocolError
from .engine.types import EngineAPI, EngineError
from .imaging.compose import as_rgba, resize
from .imaging.region import WorkPlan
from .upscale import check_upscaler

ATTACHMENT = "control"


def check_control(request: GenerateRequest, images: dict[str, Image]) -> None:
    """Cheap checks at submit time: a control model and its control image go together; guides and reference
    masks have the size of ``image``."""
    control = images.get(ATTACHMENT)
    if request.control_model is not None and control is None:
        raise ProtocolError("'control_model' needs a control image: send it as attachment 'control' (the sketch, "
                            "at the size of 'image', or of the requested size for text to image)", field="control")
    if control is not None and request.control_model is None:
        raise ProtocolError("attachment 'control' needs a 'control_model' (one of welcome.control_models)",
                            field="control_model")
    image = images.get("image")
    guides = [c.image for c in request.controls or [] if c.kind not in REFERENCE_KINDS]
    for name in [ATTACHMENT, *guides, *(c.mask for c in request.controls or [] if c.mask)]:
        guide = images.get(name)
        if guide is not None and image is not None and (guide.width, guide.height) != (image.width, image.height):
            raise ProtocolError(f"{name!r} is {guide.width}x{guide.height} but 'image' is {image.width}x"
                                f"{image.height}; send the control image or mask at the size of the image", field=name)


def check_names(request: GenerateRequest, engine: EngineAPI) -> None:
    """Submit-time checks against what the server offers: LoRA names, control model, refiner.

    Clients can only name what ``welcome`` lists, so a name is never used as a path.
    """
    if request.loras:
        known = set(engine.loras())
        for item in request.loras:
            if item["name"] not in known:
                offer = ", ".join(sorted(known)) or "none (start the server with --loras-dir)"
                raise ProtocolError(f"unknown LoRA {item['name']!r}; this server offers: {offer}", field="loras",
                                    code=ErrorCode.UNKNOWN_LORA)
    if request.control_model is not None and request.control_model not in engine.control_models():
        offer = ", ".join(engine.control_models()) or "none (start the server with --control-model)"
        raise ProtocolError(f"unknown control model {request.control_model!r}; this server offers: {offer}",
                            field="control_model")
    check_control_kinds(request, engine)
    check_upscaler(request, engine)
    if request.refiner and not engine.refiners():
        raise ProtocolError("no refiner is configured; start the server with --refiner REF or leave 'refiner' off",
                            field="refiner", code=ErrorCode.NO_REFINER)


def check_control_kinds(request: GenerateRequest, engine: EngineAPI) -> None:
    """Each control layer needs a ControlNet for the request's model: the one the engine would choose."""
    if not request.controls:
        return
    try:
        engine.check_controls(request.model, request.controls)
    except EngineError as exc:
        if (exc.field or "").startswith("controls"):  # else the model check says what is wrong
            raise ProtocolError(str(exc), field=exc.field, code=exc.code) from None


def prepare_control(plan: WorkPlan, control: np.ndarray | None, name: str = ATTACHMENT) -> PILImage.Image | None:
    """A control image at work size: cropped to the plan's region and resized like the image."""
    if control is None:
        return None
    rgba = as_rgba(control)
    if rgba.shape[:2] != (plan.image.height, plan.image.width):
        raise ProtocolError(f"{name!r} is {rgba.shape[1]}x{rgba.shape[0]} but the job is {plan.image.width}x"
                            f"{plan.image.height}; send the control image at that size (the image's size, or "
                            "width x height for text to image)", field=name)
    region = rgba[plan.region.slices].astype(np.uint16)
    rgb = (region[..., :3] * region[..., 3:] + 127) // 255  # over black
    return PILImage.fromarray(resize(rgb.astype(np.uint8), plan.work), "RGB")


def prepare_attached(plan: WorkPlan, controls: list | None, attached: dict[str, np.ndarray]) -> dict[str, PILImage.Image]:
    """The control layers' images: guides at work size (``prepare_control``), reference images whole, their
    transparent pixels white (an IP-Adapter reads a picture of any size)."""
    references = {c.image for c in controls or [] if c.kind in REFERENCE_KINDS}
    out = {}
    for name, rgba in attached.items():
        if name in references:
            rgba = as_rgba(rgba).astype(np.uint16)
            rgb = (rgba[..., :3] * rgba[..., 3:] + 255 * (255 - rgba[..., 3:]) + 127) // 255  # over white
            out[name] = PILImage.fromarray(rgb.astype(np.uint8), "RGB")
        else:
            out[name] = prepare_control(plan, rgba, name)
    return out


def used_parameters(results: list[PILImage.Image]) -> dict[str, Any]:
    """Result parameters for the features a job used (``nsfw``: one flag per image, when checked)."""
    used = results[0].info.get("easel", {}) if results else {}
    out = dict(used.get("features", {}))
    if any("nsfw" in img.info.get("easel", {}) for img in results):
        out["nsfw"] = [bool(img.info.get("easel", {}).get("nsfw")) for img in results]
    return out
