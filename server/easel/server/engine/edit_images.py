"""Reference layers of an edit model that takes several pictures (FLUX.2 Klein): no adapter, each layer's picture
goes into the pipeline beside the one it edits.

Flux2KleinPipeline's ``image`` is a list of pictures: the canvas first (what an edit changes), then the references;
text to image with references passes the references alone. A selection edit runs Flux2KleinInpaintPipeline, which
takes the canvas as its first picture and one more as ``image_reference``. The pipelines weigh every picture alike,
so a layer is on (strength 1) or off (strength 0); other strengths are refused naming ``controls[i].strength``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...client.codes import ErrorCode
from ...client.items import REFERENCE_KINDS
from .types import EngineError

KINDS = ("reference",)  # a picture to take things from; the pipelines know no style/composition/face split


@dataclass(frozen=True)
class EditImage:
    """One reference layer's picture (PIL RGB, any size: the pipeline crops it to its 16 px grid)."""

    image: Any
    strength: float = 1.0
    kind: str = "reference"


def choose(controls: Sequence[Any], label: str) -> None:
    """EngineError naming ``controls[i].kind`` or ``controls[i].strength`` for a layer the model cannot take."""
    for i, control in enumerate(controls):
        if control.kind not in REFERENCE_KINDS:
            continue
        if control.kind not in KINDS:
            raise EngineError(f"reference layer {i + 1} ({control.kind}): {label} takes reference pictures whole, "
                              "with no style, composition or face adapter; use kind reference",
                              field=f"controls[{i}].kind", code=ErrorCode.UNSUPPORTED_FEATURE)
        if control.strength not in (0, 1):
            raise EngineError(f"controls[{i}].strength {control.strength:g}: {label} weighs every picture it is "
                              "given alike; use 1 to give it this reference, 0 to leave it out",
                              field=f"controls[{i}].strength", code=ErrorCode.UNSUPPORTED_FEATURE)


def layer_image(i: int, control: Any, attached: dict[str, Any]) -> Any:
    """Reference layer ``i``'s picture from the job's attachments; EngineError naming its field when missing."""
    image = attached.get(control.image)
    if image is None:
        raise EngineError(f"reference layer {i + 1} needs its image {control.image!r}", field=f"controls[{i}].image")
    return image


def layers(controls: Sequence[Any], attached: dict[str, Any], label: str) -> list[EditImage]:
    """The pictures of the job's reference layers that are on (strength 1), in layer order."""
    choose(controls, label)
    out = []
    for i, control in enumerate(controls):
        if control.kind not in REFERENCE_KINDS:
            continue
        image = layer_image(i, control, attached)
        if control.strength > 0:
            out.append(EditImage(image.convert("RGB"), float(control.strength)))
    return out


def call_kwargs(layers: Sequence[EditImage], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The pipeline's picture arguments: ``image`` [canvas, *references] (text to image: the references), or
    for a selection edit (``mask_image`` in kwargs) the one ``image_reference`` the inpaint pipeline takes."""
    pictures = [layer.image for layer in layers]
    if "mask_image" not in kwargs:
        return {"image": ([kwargs["image"]] if "image" in kwargs else []) + pictures}
    if len(pictures) > 1:
        raise EngineError(f"a selection edit takes one reference picture (diffusers' FLUX.2 Klein inpaint pipeline "
                          f"has one image_reference), got {len(pictures)}; keep one reference layer on, or edit "
                          "the whole picture", field="controls")
    return {"image_reference": pictures[0]}
