"""The request side of the selection modes (``inpaint_mode``, ``expand``): checks, the chosen mode, the
picture the job plans on (grown for ``expand``), its pre-fill, prompt, strength and feather, the colour
match of each result and, for ``background``, the subject kept. The pixel work is ``imaging/modes.py``, the
subject's model ``background.py``; docs/imaging.md explains the modes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image as PILImage

from ..client.protocol import GenerateRequest, Image, ProtocolError
from .background import DEFAULT_MODEL, subject_matte
from .engine.types import EngineAPI, ModelInfo
from .families import Family
from .imaging import modes
from .imaging.compose import LayerResult, region_selection, region_source, resize
from .imaging.geometry import Bounds, Extent
from .imaging.region import WorkPlan, plan_generation
from .limits import Limits

_NEEDS_SELECTION = (modes.FILL, modes.ADD, modes.REMOVE)
#: the modes that run on a served inpainting model of the chosen plain model's family (``prefer_inpaint_models``)
INPAINT_MODEL_MODES = (modes.FILL, modes.EXPAND, modes.REMOVE, modes.BACKGROUND)
_INPAINT_FAMILIES = (Family.SD1, Family.SDXL, Family.FLUX)


def margins_of(request: GenerateRequest) -> tuple[int, int, int, int]:
    """The request's ``expand`` margins (left, top, right, bottom); zeros without any."""
    left, top, right, bottom = request.expand or (0, 0, 0, 0)
    return int(left), int(top), int(right), int(bottom)


def check_modes(request: GenerateRequest, images: dict[str, Image], limits: Limits) -> None:
    """Submit-time checks from the headers alone: what each mode needs, the grown picture's size."""
    margins = margins_of(request)
    image, mask = images.get("image"), images.get("mask")
    if any(margins):
        if request.upscale is not None:
            raise ProtocolError("'expand' grows the canvas and 'upscale' enlarges the picture; send one of them",
                                field="expand")
        if image is None:
            raise ProtocolError("'expand' needs an 'image' to grow; send the canvas as 'image' "
                                "(easel generate --image)", field="expand")
        if request.inpaint_mode not in ("auto", modes.EXPAND):
            raise ProtocolError(f"'expand' margins paint in inpaint_mode 'expand', not {request.inpaint_mode!r}; "
                                "leave 'inpaint_mode' out or set it to 'expand'", field="inpaint_mode")
        left, top, right, bottom = margins
        limits.check_size(image.width + left + right, image.height + top + bottom, "expand")
        canvas_w, canvas_h = request.canvas_width, request.canvas_height
        edges = (("left", left, request.x <= 0), ("top", top, request.y <= 0),
                 ("right", right, canvas_w is None or request.x + image.width >= canvas_w),
                 ("bottom", bottom, canvas_h is None or request.y + image.height >= canvas_h))
        for side, margin, touches in edges:
            if margin and not touches:
                raise ProtocolError(f"'expand' grows the {side} side, but the sent image does not reach the "
                                    f"canvas's {side} edge; send the part of the canvas along that edge",
                                    field="expand")
    elif request.inpaint_mode in _NEEDS_SELECTION and mask is None:
        raise ProtocolError(f"inpaint_mode {request.inpaint_mode!r} regenerates a selection; send a 'mask' "
                            "(white = the part to regenerate) or use 'refine'", field="inpaint_mode")
    elif request.inpaint_mode == modes.BACKGROUND and image is None:
        raise ProtocolError("inpaint_mode 'background' keeps the subject of a picture; send the canvas as 'image' "
                            "(easel generate --image), with a 'mask' to limit it to a selection", field="inpaint_mode")
    elif request.inpaint_mode == modes.EXPAND and mask is None:
        raise ProtocolError("inpaint_mode 'expand' needs 'expand' margins (LEFT, TOP, RIGHT, BOTTOM pixels) or a "
                            "'mask' reaching past the picture", field="inpaint_mode")


@dataclass(frozen=True)
class ModeSetup:
    """What a job runs on in its mode: ``request`` with the mode's prompt and strength, the picture and
    selection planned on (``image``, ``mask``; grown for expand, in the old canvas's coordinates its
    top-left is ``margins`` left and top of the sent image's; for background the selection less the subject),
    and the ``subject`` a background job keeps (HxW matte of the sent image, 255 = subject)."""

    mode: str
    request: GenerateRequest
    image: np.ndarray | None
    mask: np.ndarray | None
    margins: tuple[int, int, int, int] = (0, 0, 0, 0)
    subject: np.ndarray | None = None

    def plan(self, native: Extent | tuple[int, int]) -> WorkPlan:
        """The work plan: the feather widened for new content (unless the request set it), placed in the
        old canvas's coordinates (an expanded picture starts ``left``, ``top`` px before it)."""
        request, (left, top, right, bottom) = self.request, self.margins
        if any(self.margins):
            request = replace(request, canvas_width=request.canvas_width and request.canvas_width + left + right,
                              canvas_height=request.canvas_height and request.canvas_height + top + bottom)
        plan = plan_generation(request, self.image, self.mask, native)
        factor = modes.feather_factor(self.mode, request.strength)
        if plan.mode == "inpaint" and request.feather is None and factor != 1.0:
            plan = plan_generation(replace(request, feather=round(plan.feather * factor)), self.image, self.mask,
                                   native)
        return replace(plan, origin=(plan.origin[0] - left, plan.origin[1] - top))

    def prepared(self, plan: WorkPlan) -> np.ndarray | None:
        """The picture the model sees: the region pre-filled for the mode (``modes.prefill``)."""
        if self.image is None or plan.mode != "inpaint" or self.mode == modes.REFINE:
            return self.image
        out = self.image.copy()
        out[plan.region.slices] = modes.prefill(region_source(plan, self.image), region_selection(plan, self.mask),
                                                self.mode)
        return out

    def match(self, plan: WorkPlan, generated: Any) -> Any:
        """A generated image colour matched to its surroundings where the mode wants it (``modes.colour_match``)."""
        if self.mode not in modes.COLOUR_MATCHED or plan.mode != "inpaint" or self.image is None:
            return generated
        rgb = generated.convert("RGB") if isinstance(generated, PILImage.Image) else generated
        gen = resize(np.asarray(rgb), plan.region.extent)
        subject = None if self.subject is None else self.subject[plan.region.slices] > 0
        return modes.colour_match(gen, region_source(plan, self.image), region_selection(plan, self.mask),
                                  plan.feather, contrast=self.mode in modes.CONTRAST_MATCHED, exclude=subject)

    def keep(self, plan: WorkPlan, layer: LayerResult) -> LayerResult:
        """A result layer with the subject of a background job kept bit-exact (``modes.keep_subject``)."""
        if self.subject is None or self.image is None:
            return layer
        where = layer.bounds.offset(-plan.origin[0], -plan.origin[1]).slices
        return LayerResult(modes.keep_subject(layer.rgba, self.image[where], self.subject[where]), layer.x, layer.y)

    def parameters(self) -> dict[str, Any]:
        """What the result's ``parameters`` say about the mode (none for text to image)."""
        if self.image is None:
            return {}
        out: dict[str, Any] = {"inpaint_mode": self.mode}
        if any(self.margins):
            out["expand"] = list(self.margins)
        return out


def setup_mode(request: GenerateRequest, image: np.ndarray | None, mask: np.ndarray | None,
               background_model: str = DEFAULT_MODEL) -> ModeSetup:
    """The mode this job runs in (``modes.choose_mode``) and what it runs on; a background job runs
    ``background_model`` (the server's ``--background-model``) on the sent image to find its subject."""
    margins = margins_of(request)
    if image is None:
        return ModeSetup(modes.REFINE, request, None, None)
    if any(margins):
        image, mask = modes.grow_canvas(image, mask, margins)
    selection = Bounds.from_mask(mask) if mask is not None else None
    canvas = Extent(image.shape[1], image.shape[0])  # as plan_generation: no canvas size = the sent image's
    visible = Bounds.of(canvas)
    if request.canvas_width is not None or request.canvas_height is not None:
        canvas = Extent(request.canvas_width or 2**31, request.canvas_height or 2**31)
        visible = Bounds.of(canvas, -request.x, -request.y)
    if selection is not None and not any(margins):
        selection = selection.intersect(visible)
        selection = None if selection.is_empty else selection
    mode = modes.choose_mode(request.inpaint_mode, request.strength, selection, canvas, margins)
    subject = None
    if mode == modes.BACKGROUND and (mask is None or selection is not None):
        subject = subject_matte(image, background_model)
        whole = np.full(image.shape[:2], 255, np.uint8)
        mask = modes.background_selection(whole if mask is None else mask, subject)
        selection = Bounds.from_mask(mask)
        if selection is None:
            raise ProtocolError(f"inpaint_mode 'background': the background model ({background_model}) finds only "
                                "subject in the selection; select some background, or use 'fill'",
                                field="inpaint_mode")
    if mode == modes.REFINE or selection is None:
        return ModeSetup(modes.REFINE, request, image, mask, margins)
    if mode in modes.FULL_STRENGTH:
        request = replace(request, strength=1.0)
    if mode == modes.REMOVE:
        request = replace(request, prompt="")
    return ModeSetup(mode, request, image, mask, margins, subject)


def inpaint_model(engine: EngineAPI, model: ModelInfo, mode: str) -> ModelInfo | None:
    """The inpainting model a ``mode`` job on plain ``model`` runs on instead: the first served one of its family
    (SD 1.x, SDXL, FLUX.1) when the mode paints new content into a selection (``INPAINT_MODEL_MODES``) and the engine's
    ``prefer_inpaint_models`` is on; None: the job stays on ``model``."""
    if (mode not in INPAINT_MODEL_MODES or model.inpaint or model.family not in _INPAINT_FAMILIES
            or not getattr(engine, "prefer_inpaint_models", False)):
        return None
    return next((m for m in engine.models() if m.inpaint and m.family == model.family and not m.problem), None)
