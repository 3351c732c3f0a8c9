"""Region layers in GIMP: Filters > Easel > Use as Region….

A layer (or layer group) is a region when it carries the persistent parasite ``easel-region``: the JSON of its
``editing.RegionLayer`` (prompt, negative prompt, enabled), kept in XCF files. Generate, Image from Sketch and
Regenerate Selection send every enabled region layer as one of the request's ``regions`` (``region-layers`` on):
its mask is the layer's alpha over what the request covers (where it has paint), its prompt is added to the base
prompt there (``editing.build_request``). Region layers stay part of the picture sent (they are paint the
painter sees); hide one to keep its paint out, its paint still marks the region. The ``layer`` of a
``RegionLayer`` is the carrying layer's tattoo, read from the layer itself.
"""

from __future__ import annotations

import gi

gi.require_version("Gimp", "3.0")
from easel_marks import LayerMarks  # noqa: E402
from easel_pixels import CallingError  # noqa: E402
from gi.repository import Gimp, GObject  # noqa: E402
from shared import editing  # noqa: E402

PARASITE = "easel-region"
RW = GObject.ParamFlags.READWRITE


MARKS = LayerMarks(PARASITE, editing.regions_from_text)
read_mark, mark = MARKS.read, MARKS.write  # a layer's RegionLayer (or None); mark a layer (None: unmark)


def region_layers(image) -> list[tuple[object, editing.RegionLayer]]:
    """(layer, texts) of every region layer of ``image``, top to bottom."""
    return MARKS.layers(image)


def summary(image) -> str:
    """One line naming the image's region layers, for the generating dialogs ('' when none)."""
    parts = [editing.regions.layer_label(layer.get_name(), r) + ("" if r.enabled else " (off)")
             for layer, r in region_layers(image)]
    return "Regions: " + "; ".join(parts) if parts else ""


def add_use_arguments(proc) -> None:
    """Use as Region…: the ``RegionLayer`` texts of the selected layers."""
    proc.add_string_argument("prompt", "Region _prompt", "What to paint where the layer has paint (added to the "
                             "generating command's prompt there)", "", RW)
    proc.add_string_argument("negative-prompt", "_Negative prompt", "What to avoid there (optional)", "", RW)
    proc.add_boolean_argument("enabled", "_Use as region", "Off: an ordinary layer again", True, RW)


def prefill(config, drawables) -> None:
    """Show the first selected layer's own texts in the Use as Region dialog."""
    current = next((r for d in drawables if isinstance(d, Gimp.Layer) and (r := read_mark(d))), None)
    if current is not None:
        config.set_property("prompt", current.prompt)
        config.set_property("negative-prompt", current.negative_prompt)
        config.set_property("enabled", current.enabled)


def run_use(image, drawables, config) -> list:
    """Mark (or, ``enabled`` off, unmark) each selected layer as a region, in one undo step."""
    layers = [d for d in drawables if isinstance(d, Gimp.Layer)]
    if not layers:
        raise CallingError("Use as Region needs a layer: select the layer whose paint marks the region first")
    get = config.get_property
    marks = []
    for layer in layers:
        region = editing.RegionLayer(str(layer.get_tattoo()), (get("prompt") or "").strip(),
                                     (get("negative-prompt") or "").strip())
        if get("enabled"):
            try:
                region.check()
            except ValueError as exc:
                raise CallingError(f"{exc} (the prompt field)") from None
        marks.append(region if get("enabled") else None)
    image.undo_group_start()
    try:
        for layer, region in zip(layers, marks):
            mark(layer, region)
    finally:
        image.undo_group_end()
    return []
