"""The one request builder both plugins call: read the document, plan, add the guide and features, check.

A plugin wraps its editor's document in a ``Document`` (six reads: size, selection bounds, visible
pixels without the control layers, one layer's pixels and its bounds, selection mask) and calls ``build_request``; the sequence read → plan → sketch guide →
features → check lives here once, so Krita and GIMP send the same request for the same document,
and it is tested without an editor (``tests/test_request_builder.py``, on a fake document).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

from ..protocol import Image
from .controls import ControlLayer, control_items
from .core import INPAINT, Box, EditorState, Params, plan_request, read_plan
from .power import FeaturePlan, Features, apply_features, sketch_guide
from .regions import RegionLayer, region_items
from .ui import check_request


class Document(Protocol):
    """What the builder reads from an editor's document; each plugin adapts its editor's API to it."""

    def size(self) -> tuple[int, int]:
        """The document's width and height in pixels."""
        ...

    def selection_box(self) -> Box | None:
        """The selection's bounds (x, y, w, h), or None when nothing is selected."""
        ...

    def read_canvas(self, box: Box, exclude: Sequence[str] = ()) -> bytes:
        """The visible picture over ``box`` as 8-bit RGBA, row-major, without the layers ``exclude``
        names (the control layers: they steer, they are not part of the picture)."""
        ...

    def read_layer(self, layer: str, box: Box) -> bytes:
        """One layer's own pixels over ``box`` as 8-bit RGBA (transparent where it has no paint)."""
        ...

    def layer_bounds(self, layer: str) -> Box | None:
        """One layer's own bounds (x, y, w, h) in the document, where it has pixels (Krita: the node's
        bounds; GIMP: the layer's offsets and size); None when it is empty. A reference layer is sent whole."""
        ...

    def read_selection(self, box: Box) -> bytes:
        """The selection over ``box`` as 8-bit gray (0 keep .. 255 regenerate), row-major."""
        ...


BACKGROUND = "background"  #: the selection mode (protocol ``INPAINT_MODES``) that needs no selection in the editors
#: The selection modes (protocol ``INPAINT_MODES``) in the editors' order, each with its few words of help.
SELECTION_MODES = {"auto": "fill at 100 %, else refine", "fill": "new content", "add": "a new object",
                   "remove": "prompt-free", "expand": "outpaint", BACKGROUND: "a new one around the subject",
                   "refine": "keep it as context"}


def selection_mode_help() -> str:
    """The editors' help line for the selection mode: every mode with its words."""
    return "How a selection is repainted: " + ", ".join(f"{m.capitalize()} ({w})" for m, w in SELECTION_MODES.items())


class RequestProblem(ValueError):
    """A request the server would refuse, said in plain words before anything is sent."""


def read_state(doc: Document, strength: float, use_selection: bool = True,
               exclude: Sequence[str] = (), inpaint_mode: str = "") -> EditorState:
    """Everything ``plan_request`` needs, reading only what the mode needs (``read_plan``).

    ``use_selection`` False reads the document as if nothing were selected (GIMP's Generate and
    Image from Sketch commands, which leave the selection alone); ``exclude``: layers left out of
    the canvas (the control layers). With ``inpaint_mode`` ``background`` and no selection (none used, or
    an empty one), the whole canvas is the selection: sent with an all-white mask, so the server replaces
    the background of the whole picture."""
    width, height = doc.size()
    box = doc.selection_box() if use_selection else None
    mode, region = read_plan(width, height, box, strength)
    mask = doc.read_selection(region) if mode == INPAINT and region is not None else None
    if inpaint_mode == BACKGROUND and not (mask and any(mask)):
        region, mask = (0, 0, width, height), b"\xff" * (width * height)
    if region is None:
        return EditorState(width, height)
    return EditorState(width, height, doc.read_canvas(region, exclude), tuple(region), mask)


def build_request(doc: Document, params: Params, features: Features | None = None, use_selection: bool = True,
                  controls: Sequence[ControlLayer] = (), regions: Sequence[RegionLayer] = ()) -> FeaturePlan:
    """The request for ``doc`` and the painter's settings, with its attachments; ``RequestProblem``
    names what the server would refuse.

    Control layers (``controls``) are read each on its own over exactly what is sent (text to image:
    the whole canvas; a reference layer: whole, over its own bounds) and left out of the canvas, enabled
    or not. Region layers (``regions``) stay in the canvas; each enabled one's alpha over the same box is a
    region's mask (``region_items``). An expand job (``features.expand``) sends the whole canvas without the
    selection, control or region layers (theirs would have to be the grown picture's size); the result grows the
    canvas (``grown_canvas``). A background job (``features.inpaint_mode``) without a selection sends the whole
    canvas as the selection (``read_state``). With a control model, the sketch
    guide is the visible picture over the same pixels, inverted when it is drawn dark on light
    (``sketch_guide``)."""
    features = features or Features()
    exclude = [c.layer for c in controls]
    if features.expand:  # the whole canvas reaches every edge that grows; the margins are the selection
        controls, regions = [], []  # theirs would have to be the grown picture's size: left out
        features = replace(features, control_model=None)
        width, height = doc.size()
        state = EditorState(width, height, doc.read_canvas((0, 0, width, height), exclude), (0, 0, width, height))
        planned = plan_request(state, replace(params, strength=min(params.strength, 0.5)))  # sends the image
        planned.request.strength = params.strength  # expand runs at 1 whatever is sent
    else:
        state = read_state(doc, params.strength, use_selection, exclude, features.inpaint_mode)
        planned = plan_request(state, params)
    box = state.box
    guide = None
    if features.control_model:
        rgba = state.rgba if state.rgba is not None else doc.read_canvas(box, exclude)
        guide = Image.rgba(box[2], box[3], sketch_guide(rgba)[0])
    try:
        items, planned.attachments = control_items(controls, doc.read_layer, box, doc.layer_bounds)
        areas, masks = region_items(regions, doc.read_layer, box)
    except ValueError as exc:
        raise RequestProblem(str(exc)) from None
    planned.request.controls = items or None
    planned.request.regions = areas or None
    planned.attachments.update(masks)
    planned = apply_features(planned, features, guide)
    problem = check_request(planned)
    if problem:
        raise RequestProblem(problem)
    return planned
