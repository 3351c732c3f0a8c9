"""Region layers in the editors: layers (or groups) with a prompt of their own, painted where they have paint.

A painter marks a paint layer or group as a region and gives it a prompt (and optionally a negative); both
plugins keep a list of ``RegionLayer`` with the document (``to_text``/``from_text``: one JSON text; Krita:
an annotation, GIMP: a parasite on each layer) and hand it to ``build_request``, which reads each enabled
layer over exactly what is sent and adds it to the request's ``regions``: the mask is the layer's alpha
(where it has paint), the prompt is added to the base prompt there (docs/features.md "Regions").

Region layers stay part of the canvas: they are paint the painter sees, and what refine / regenerate
selection start from. A hidden layer is left out of the canvas as any hidden layer is, but its paint
still marks its region, so a painter can keep a mask-only layer hidden.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields

from ..fields import FieldError
from ..protocol import MAX_REGIONS, Image, Region
from .core import Box
from .live import find_model
from .power import model_features


@dataclass
class RegionLayer:
    """One layer used as a region: the editor's id for it and the ``Region`` texts."""

    layer: str  # the editor's own id (Krita: the node's unique id; GIMP: the layer's tattoo)
    prompt: str = ""
    negative_prompt: str = ""
    enabled: bool = True

    def check(self) -> None:
        """ValueError in plain words for texts the server would refuse (the ``Region`` declarations)."""
        if not isinstance(self.prompt, str) or not isinstance(self.negative_prompt, str):
            raise ValueError("region layer: the prompt and the negative prompt are texts")
        try:
            Region("-", self.prompt, self.negative_prompt)
        except FieldError as exc:
            raise ValueError(f"region layer: {exc}") from None


def to_text(layers: Sequence[RegionLayer]) -> str:
    """The list as one JSON text, for the document (Krita: an annotation; GIMP: per layer, a parasite)."""
    return json.dumps([asdict(r) for r in layers], separators=(",", ":"))


def from_text(text: str | None) -> list[RegionLayer]:
    """The inverse of ``to_text``; entries that are damaged or no longer valid are left out."""
    try:
        items = json.loads(text or "[]")
    except ValueError:
        return []
    names = {f.name for f in fields(RegionLayer)}
    out = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("layer"), str):
            continue
        try:
            layer = RegionLayer(**{k: v for k, v in item.items() if k in names})
            layer.check()
        except (TypeError, ValueError):
            continue
        out.append(layer)
    return out


def alpha_of(rgba: bytes) -> bytes:
    """The alpha channel of 8-bit RGBA pixels as gray8: where a layer has paint (255) and where not (0)."""
    return bytes(rgba[3::4])


def region_items(layers: Sequence[RegionLayer], read_layer: Callable[[str, Box], bytes],
                 box: Box) -> tuple[list[Region], dict[str, Image]]:
    """The request's ``regions`` and their mask attachments for the enabled ``layers``: each layer's alpha
    (``read_layer(layer, box)`` -> RGBA) over ``box``, exactly what the request sends (text to image: the
    whole canvas). A layer without paint inside ``box`` is left out (it would change nothing); ValueError
    in plain words for more than ``MAX_REGIONS`` enabled layers or a region without a prompt."""
    enabled = [r for r in layers if r.enabled]
    if len(enabled) > MAX_REGIONS:
        raise ValueError(f"at most {MAX_REGIONS} region layers per job ({len(enabled)} are switched on): "
                         "switch some off")
    items, images = [], {}
    for layer in enabled:
        layer.check()
        mask = alpha_of(read_layer(layer.layer, box))
        if not any(mask):
            continue
        name = f"regions.{len(items)}.mask"
        images[name] = Image.gray(box[2], box[3], mask)
        items.append(Region(name, layer.prompt, layer.negative_prompt))
    return items, images


def model_has_regions(welcome: dict | None, model_id: str | None) -> bool:
    """Whether the server's welcome lists ``regions`` in the features of ``model_id`` (None: its default
    model): show the region controls only then (``fit_to_model`` drops regions elsewhere). A server that
    lists no features is not assumed to have them."""
    return "regions" in model_features(find_model(welcome, model_id))


def layer_label(name: str, region: RegionLayer) -> str:
    """One line for a list of regions: ``layer name: prompt`` (and ``(not: negative)``)."""
    negative = f" (not: {region.negative_prompt})" if region.negative_prompt else ""
    return f"{name}: {region.prompt}{negative}"


__all__ = ["MAX_REGIONS", "RegionLayer", "alpha_of", "from_text", "layer_label", "model_has_regions",
           "region_items", "to_text"]
