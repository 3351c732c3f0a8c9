"""The request's list items and their command-line forms: LoRAs, control layers and regions.

Each item type is a declared dataclass (``easel.client.fields``), so its checks, its wire form, its
docs table and its ``easel generate`` flag follow from the declaration, as for the request's own fields.
Stdlib only: bundled into the plugins with the rest of ``easel.client``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .codes import ProtocolError
from .fields import FieldError, declare

MAX_LORAS = 8
LORA_WEIGHT = (-4.0, 4.0)  # the allowed range of a LoRA's weight


def _check_loras(value: list) -> str | None:
    """The structure of ``loras``: at most MAX_LORAS {"name": str, "weight": number} objects."""
    if len(value) > MAX_LORAS:
        return f"may list at most {MAX_LORAS} LoRAs (got {len(value)})"
    for item in value:
        if (not isinstance(item, dict) or not isinstance(item.get("name"), str) or set(item) - {"name", "weight"}
                or not isinstance(item.get("weight", 1.0), (int, float)) or isinstance(item.get("weight"), bool)):
            return 'must be a list of {"name": string, "weight": number} objects'
        if not LORA_WEIGHT[0] <= float(item.get("weight", 1.0)) <= LORA_WEIGHT[1]:
            return f"weight of {item['name']!r} must be between {LORA_WEIGHT[0]:g} and {LORA_WEIGHT[1]:g}"
    return None


def parse_lora(text: str) -> dict:
    """``NAME[:WEIGHT]`` -> {"name", "weight"}; ProtocolError (field loras) for a weight that is no number."""
    name, sep, weight = text.rpartition(":")
    if not sep:
        return {"name": text, "weight": 1.0}
    try:
        return {"name": name, "weight": float(weight)}
    except ValueError:
        raise ProtocolError(f"LoRA {text!r}: write NAME:WEIGHT with a number after ':' (e.g. ink:0.8)",
                            field="loras") from None


#: kinds a ControlNet steers with (a guide at the picture's size, over the denoising's ``start`` to ``end``)
CONTROLNET_KINDS = ("scribble", "lineart", "softedge", "canny", "depth", "normal", "pose", "segmentation", "tile",
                    "stencil", "inpaint")
#: reference images an IP-Adapter reads (any size, the whole denoising): content and look, only the style,
#: only the layout, a face
REFERENCE_KINDS = ("reference", "style", "composition", "face")
CONTROL_KINDS = CONTROLNET_KINDS + REFERENCE_KINDS
MAX_CONTROLS = 4


@dataclass
class Control:
    """One control layer: a guide image of one kind, steering the ControlNet for that kind from ``start`` to
    ``end`` of the denoising (fractions) with ``strength``; several combine (diffusers' Multi-ControlNet). A
    reference kind (``REFERENCE_KINDS``) is a picture of any size that an IP-Adapter reads for the whole
    denoising (docs/features.md)."""

    kind: str = declare(help="what the image shows; reference, style, composition and face are reference images "
                             "(IP-Adapter)", choices=CONTROL_KINDS)
    image: str = declare(help="the attachment holding the guide, at the size of `image` (text to image: the "
                              "requested size); a reference image: any size", attachment=True)
    strength: float = declare(1.0, "how strongly it steers (0 = not at all)", low=0.0, high=2.0)
    start: float = declare(0.0, "the fraction of the denoising where it starts steering", low=0.0, high=1.0)
    end: float = declare(1.0, "the fraction where it stops; at least `start`", low=0.0, high=1.0)
    model: str | None = declare(None, "a ControlNet id from `welcome.control_models`",
                                default_text="the server's for the kind and the model's family")
    mask: str | None = declare(None, "a reference image only: the attachment holding a mask that limits it to part "
                                     "of the picture (white = it acts there; soft values weight), at the size of "
                                     "`image` (text to image: the requested size); SD 1.x and SDXL",
                               default_text="the whole picture", attachment=True)

    def __post_init__(self) -> None:
        if self.kind in REFERENCE_KINDS:
            for name, default in (("start", 0.0), ("end", 1.0)):
                if getattr(self, name) != default:
                    raise FieldError(name, f"'{name}' must be {default:g} for a {self.kind} layer: an IP-Adapter "
                                           "reads its reference image for the whole denoising")
            if self.model is not None:
                raise FieldError("model", f"'model' names a ControlNet; a {self.kind} layer uses the server's "
                                          "IP-Adapter for the model: leave 'model' out")
        elif self.mask is not None:
            raise FieldError("mask", f"'mask' limits a reference image to part of the picture; a {self.kind} layer's "
                                     "guide already says where it steers: leave 'mask' out")
        if self.end < self.start:
            raise FieldError("end", f"'end' must be at least 'start' ({self.start:g}; got {self.end:g}): the layer "
                                    "steers from start to end")


def parse_control(text: str) -> dict:
    """``KIND=IMAGE[@STRENGTH[@START-END]]`` -> a ``Control``'s fields (``image``: the file, for the CLI to
    attach); ProtocolError (field controls) for text that does not fit."""
    usage = "write KIND=IMAGE[@STRENGTH[@START-END]], e.g. lineart=sketch.png@0.8@0-0.7"
    kind, sep, rest = text.partition("=")
    parts = rest.split("@")
    if not sep or not kind or not parts[0] or len(parts) > 3:
        raise ProtocolError(f"control {text!r}: {usage}", field="controls")
    item: dict[str, Any] = {"kind": kind, "image": parts[0]}
    try:
        if len(parts) > 1:
            item["strength"] = float(parts[1])
        if len(parts) > 2:
            start, dash, end = parts[2].partition("-")
            if not dash:
                raise ValueError(parts[2])
            item.update(start=float(start), end=float(end))
    except ValueError:
        raise ProtocolError(f"control {text!r}: strength, start and end are numbers; {usage}",
                            field="controls") from None
    return item


MASK_MARK = "#mask="  # --reference IMAGE#mask=MASK: the reference acts where MASK is white


def parse_reference(text: str) -> dict:
    """``[KIND=]IMAGE[@STRENGTH][#mask=MASK]`` -> a reference ``Control``'s fields (KIND: one of
    ``REFERENCE_KINDS``, ``reference`` when left out; ``image`` and ``mask``: the files, for the CLI to attach);
    ProtocolError (field controls) for text that does not fit."""
    usage = (f"write [KIND=]IMAGE[@STRENGTH][{MASK_MARK}MASK] with KIND one of {', '.join(REFERENCE_KINDS)}, e.g. "
             f"style=painting.png@0.7{MASK_MARK}left.png")
    text, marked, mask = text.partition(MASK_MARK)
    if marked and not mask:
        raise ProtocolError(f"reference {text + marked!r}: name the mask file after {MASK_MARK!r}; {usage}",
                            field="controls")
    kind, sep, rest = text.partition("=")
    if not sep:
        kind, rest = REFERENCE_KINDS[0], text
    elif kind not in REFERENCE_KINDS:
        hint = f"use --control {text}" if kind in CONTROLNET_KINDS else usage
        raise ProtocolError(f"reference {text!r}: {kind!r} is no reference kind; {hint}", field="controls")
    image, at, strength = rest.rpartition("@") if "@" in rest else (rest, "", "")
    item: dict[str, Any] = {"kind": kind, "image": image, **({"mask": mask} if mask else {})}
    if not image:
        raise ProtocolError(f"reference {text!r}: {usage}", field="controls")
    if at:
        try:
            item["strength"] = float(strength)
        except ValueError:
            raise ProtocolError(f"reference {text!r}: the strength after '@' is a number; {usage}",
                                field="controls") from None
    return item


MAX_REGIONS = 8


@dataclass
class Region:
    """One region of the picture with a prompt of its own: where its mask is white, the base prompt plus
    ", " and this prompt paint (soft mask values weight it, overlapping regions blend); elsewhere the base
    prompt alone. SD 1.x/2.x/SDXL (it masks the UNet's cross-attention)."""

    mask: str = declare(help="the attachment holding the mask (white = the region; gray or alpha, soft values "
                             "weight), at the size of `image` (text to image: the requested size)", attachment=True)
    prompt: str = declare(help="what to paint there, added to the base `prompt`")
    negative_prompt: str = declare("", "what to avoid there, added to the base `negative_prompt`")

    def __post_init__(self) -> None:
        if not self.prompt.strip():
            raise FieldError("prompt", "'prompt' must say what to paint in the region (got an empty text)")


def parse_region(text: str) -> dict:
    """``MASK=PROMPT`` -> a ``Region``'s fields (``mask``: the file, for the CLI to attach); ProtocolError
    (field regions) for text that does not fit."""
    mask, sep, prompt = text.partition("=")
    if not sep or not mask or not prompt.strip():
        raise ProtocolError(f"region {text!r}: write MASK=PROMPT, e.g. left.png='a red apple' (white = the region)",
                            field="regions")
    return {"mask": mask, "prompt": prompt}
