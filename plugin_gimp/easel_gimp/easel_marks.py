"""Layers marked with a persistent parasite that holds one JSON record each (kept in XCF files): control
layers (``easel-control``, easel_controls.py) and region layers (``easel-region``, easel_regions.py).

The record's ``layer`` is the carrying layer's tattoo, read from the layer itself, so a duplicated marked
layer is one of its own. ``from_text`` is the shared client's reader of a list of such records
(``editing.controls_from_text``, ``editing.regions_from_text``), which checks them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import gi

gi.require_version("Gimp", "3.0")
from gi.repository import Gimp  # noqa: E402


def all_layers(image) -> list:
    """Every layer of ``image``, top to bottom, the layers inside groups included."""
    out = []

    def walk(layers) -> None:
        for layer in layers:
            out.append(layer)
            if layer.is_group():
                walk(layer.get_children())

    walk(image.get_layers())
    return out


class LayerMarks:
    """The layers of one kind of mark: ``read`` a layer's record, ``write`` (or remove) it, list ``layers``."""

    def __init__(self, parasite: str, from_text: Callable[[str], list]):
        self.parasite, self.from_text = parasite, from_text

    def read(self, layer) -> Any | None:
        """The layer's record, or None when it carries none (or one that does not check)."""
        parasite = layer.get_parasite(self.parasite)
        if parasite is None:
            return None
        try:
            item = json.loads(bytes(parasite.get_data()).decode())
        except ValueError:
            return None
        if not isinstance(item, dict):
            return None
        item["layer"] = str(layer.get_tattoo())  # the carrier, not whichever layer the JSON once named
        found = self.from_text(json.dumps([item]))
        return found[0] if found else None

    def write(self, layer, record: Any | None) -> None:
        """Mark ``layer`` with ``record`` (None: an ordinary layer again)."""
        if record is None:
            if layer.get_parasite(self.parasite) is not None:
                layer.detach_parasite(self.parasite)
            return
        data = json.dumps(asdict(record), separators=(",", ":")).encode()
        layer.attach_parasite(Gimp.Parasite.new(self.parasite, Gimp.PARASITE_PERSISTENT, list(data)))

    def layers(self, image) -> list[tuple[object, Any]]:
        """(layer, record) of every marked layer of ``image``, top to bottom."""
        return [(layer, r) for layer in all_layers(image) if (r := self.read(layer)) is not None]
