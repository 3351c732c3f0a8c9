"""Control layers in the editors: which layers steer a generation, how, and what of them is sent.

A painter marks layers as control layers (a kind — line art, depth … or a reference image —, a strength
and, for ControlNet kinds, a step range);
both plugins keep a list of ``ControlLayer`` with the document (``to_text``/``from_text``: one JSON
text, every value checked by the request's own declarations) and hand it to ``build_request``, which
reads each enabled layer over exactly what is sent (a reference layer: whole, at its own bounds) and adds
it to the request's ``controls``. Control layers are never part of the canvas that is sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields

from ..fields import FieldError, declared
from ..protocol import CONTROL_KINDS, REFERENCE_KINDS, Control, Image
from .core import Box
from .live import find_model
from .power import sketch_guide

#: kinds whose guides are lines: a layer drawn dark on light (or on transparent paper) is inverted
#: to the white-on-black the ControlNets expect, as the sketch guide is
LINE_KINDS = ("scribble", "lineart", "softedge", "canny")


@dataclass
class ControlLayer:
    """One layer used as a control layer: the editor's id for it, and the ``Control`` settings."""

    layer: str  # the editor's own id (Krita: the node's unique id; GIMP: the layer's tattoo)
    kind: str = "lineart"
    strength: float = 1.0
    start: float = 0.0
    end: float = 1.0
    enabled: bool = True

    def check(self) -> None:
        """ValueError in plain words for settings the server would refuse (the ``Control`` declarations)."""
        known = declared(Control)
        try:
            for name in ("kind", "strength", "start", "end"):
                known[name].check(getattr(self, name))
            Control(self.kind, "-", self.strength, self.start, self.end)  # end ≥ start
        except FieldError as exc:
            raise ValueError(f"control layer ({self.kind}): {exc}") from None


def has_range(kind: str) -> bool:
    """Whether ``kind`` steers over a step range (ControlNets); a reference kind (IP-Adapter) is read for
    the whole denoising, so the panels offer no range for it."""
    return kind not in REFERENCE_KINDS


def settings(layer: str, kind: str, strength: float, start: float = 0.0, end: float = 1.0,
             enabled: bool = True) -> ControlLayer:
    """The ``ControlLayer`` a panel or dialog sets: the range only for the kinds that have one (else 0–1)."""
    if not has_range(kind):
        start, end = 0.0, 1.0
    return ControlLayer(layer, kind, strength, start, end, enabled)


def to_text(layers: Sequence[ControlLayer]) -> str:
    """The list as one JSON text, for the document (Krita: an annotation; GIMP: a parasite)."""
    return json.dumps([asdict(c) for c in layers], separators=(",", ":"))


def from_text(text: str | None) -> list[ControlLayer]:
    """The inverse of ``to_text``; entries that are damaged or no longer valid are left out."""
    try:
        items = json.loads(text or "[]")
    except ValueError:
        return []
    names = {f.name for f in fields(ControlLayer)}
    out = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("layer"), str):
            continue
        try:
            layer = ControlLayer(**{k: v for k, v in item.items() if k in names})
            layer.check()
        except (TypeError, ValueError):
            continue
        out.append(layer)
    return out


def control_items(layers: Sequence[ControlLayer], read_layer: Callable[[str, Box], bytes], box: Box,
                  layer_bounds: Callable[[str], Box | None] | None = None) -> tuple[list[Control], dict[str, Image]]:
    """The request's ``controls`` and their attachments for the enabled ``layers``: each layer's own
    pixels (``read_layer(layer, box)`` -> RGBA) over ``box``, line kinds made white on black; a reference
    layer whole, over its own bounds (``layer_bounds(layer)``: x, y, w, h in the document, None when it
    is empty), as it is painted (the server reads transparent as white)."""
    items, images = [], {}
    for layer in (c for c in layers if c.enabled):
        layer.check()
        name = f"controls.{len(items)}.image"
        where = box
        if not has_range(layer.kind):
            if layer_bounds is None:
                raise TypeError("control_items: reference layers are read over layer_bounds")
            where = layer_bounds(layer.layer)
            if where is None or where[2] <= 0 or where[3] <= 0:
                raise ValueError(f"control layer ({layer.kind}): the layer is empty: paste the reference picture "
                                 "on it, or switch it off")
        rgba = read_layer(layer.layer, where)
        if layer.kind in LINE_KINDS:
            rgba = sketch_guide(rgba)[0]
        images[name] = Image.rgba(where[2], where[3], rgba)
        items.append(Control(layer.kind, name, layer.strength, layer.start, layer.end))
    return items, images


def model_kinds(welcome: dict | None, model_id: str | None) -> list[str]:
    """The control kinds the server can steer ``model_id`` with (the welcome's per-model ``controls``;
    None: its default model). Empty: hide the control layers (``fit_to_model`` then drops them)."""
    entry = find_model(welcome, model_id) or {}
    kinds = entry.get("controls")
    return [k for k in kinds if k in CONTROL_KINDS] if isinstance(kinds, list) else []


def guide_name(kind: str) -> str:
    """The name of a layer made by "From image" (the server's ``preprocess``)."""
    return f"Easel guide: {kind}"


__all__ = ["CONTROL_KINDS", "LINE_KINDS", "REFERENCE_KINDS", "ControlLayer", "control_items", "from_text",
           "guide_name", "has_range", "model_kinds", "settings", "to_text"]
