"""Control layers in GIMP: Filters > Easel > Use as Control Layer… and Make Control Layer….

A layer is a control layer when it carries the persistent parasite ``easel-control``: the JSON of its
``editing.ControlLayer`` (kind, strength, start, end, enabled), kept in XCF files. A reference kind (style,
face …) has no step range (Start and End are kept at 0 and 1) and is sent whole, at the layer's own size. Generate, Image from
Sketch and Regenerate Selection send every marked layer as one of the request's ``controls`` (read on its
own, whatever its visibility) and leave all of them out of the picture they send
(``editing.build_request``). The ``layer`` of a ``ControlLayer`` is the carrying layer's tattoo, read
from the layer itself, so a duplicated control layer is a control layer of its own.
"""

from __future__ import annotations

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
import easel_jobs  # noqa: E402
from easel_marks import LayerMarks  # noqa: E402
from easel_pixels import RGBA, CallingError, EaselError, layer_type, selection_box, visible_composite  # noqa: E402
from gi.repository import Gegl, Gimp, GObject  # noqa: E402
from shared import editing  # noqa: E402
from shared.codes import PreprocessKind  # noqa: E402
from shared.editing.controls import CONTROL_KINDS, REFERENCE_KINDS, Control  # noqa: E402
from shared.fields import declared  # noqa: E402

PARASITE = "easel-control"
RW = GObject.ParamFlags.READWRITE
MADE_KINDS = tuple(str(k) for k in PreprocessKind)  # what the server's ``preprocess`` makes


# ----------------------------------------------------------------------------- the parasite
MARKS = LayerMarks(PARASITE, editing.controls_from_text)
read_mark, mark = MARKS.read, MARKS.write  # a layer's ControlLayer (or None); mark a layer (None: unmark)


def control_layers(image) -> list[tuple[object, editing.ControlLayer]]:
    """(layer, settings) of every control layer of ``image``, top to bottom."""
    return MARKS.layers(image)


def summary(image) -> str:
    """One line naming the image's control layers, for the generating dialogs ('' when none)."""
    parts = [f"{layer.get_name()} ({c.kind} {c.strength:g}{'' if c.enabled else ', off'})"
             for layer, c in control_layers(image)]
    return "Control layers: " + ", ".join(parts) if parts else ""


# ----------------------------------------------------------------------------- arguments
def _choice(kinds) -> Gimp.Choice:
    choice = Gimp.Choice.new()
    for i, kind in enumerate(kinds):
        choice.add(kind, i, kind, "")
    return choice


def add_use_arguments(proc) -> None:
    """Use as Control Layer…: the ``ControlLayer`` settings of the selected layers."""
    spec = declared(Control)
    proc.add_choice_argument("kind", "_Kind", "What the layer shows: a ControlNet kind, or a reference image "
                             f"({', '.join(REFERENCE_KINDS)})",
                             _choice(CONTROL_KINDS), "lineart", RW)
    proc.add_double_argument("strength", "_Strength", f"How strongly it steers ({spec['strength'].range_text()})",
                             spec["strength"].spec.low, spec["strength"].spec.high, 1.0, RW)
    proc.add_double_argument("start", "St_art", "The fraction of the denoising where it starts steering (reference "
                             "kinds: always 0)", 0.0, 1.0, 0.0, RW)
    proc.add_double_argument("end", "_End", "The fraction where it stops, at least Start (reference kinds: always 1)",
                             0.0, 1.0, 1.0, RW)
    proc.add_boolean_argument("enabled", "_Use as control layer", "Off: an ordinary layer again", True, RW)


def add_make_arguments(proc) -> None:
    """Make Control Layer…: which guide the server makes and how strongly the new layer steers."""
    proc.add_choice_argument("kind", "_Kind", "The guide the server makes from what the image shows",
                             _choice(MADE_KINDS), "canny", RW)
    spec = declared(Control)["strength"]
    proc.add_double_argument("strength", "_Strength", f"How strongly the new layer steers ({spec.range_text()})",
                             spec.spec.low, spec.spec.high, 1.0, RW)
    proc.add_layer_return_value("layer", "Layer", "The new control layer", True, RW)


def prefill(config, drawables) -> None:
    """Show the first selected layer's own settings in the Use as Control Layer dialog."""
    current = next((c for d in drawables if isinstance(d, Gimp.Layer) and (c := read_mark(d))), None)
    if current is not None:
        for name in ("kind", "strength", "start", "end", "enabled"):
            config.set_property(name, getattr(current, name))


# ----------------------------------------------------------------------------- the commands
def run_use(image, drawables, config) -> list:
    """Mark (or, ``enabled`` off, unmark) each selected layer, in one undo step."""
    layers = [d for d in drawables if isinstance(d, Gimp.Layer)]
    if not layers:
        raise CallingError("Use as Control Layer needs a layer: select the layer that guides the result first")
    get = config.get_property
    settings = []
    for layer in layers:
        control = editing.controls.settings(str(layer.get_tattoo()), get("kind"), get("strength"), get("start"),
                                            get("end"))
        try:
            control.check()
        except ValueError as exc:
            raise CallingError(str(exc)) from None
        settings.append(control if get("enabled") else None)
    image.undo_group_start()
    try:
        for layer, control in zip(layers, settings):
            mark(layer, control)
    finally:
        image.undo_group_end()
    return []


def run_make(image, config, dialog) -> list | None:
    """Ask the server for a ``kind`` guide of what the image shows (over the selection's bounds, if any;
    control layers left out) and add it as a new control layer at that place."""
    get = config.get_property
    kind, strength = get("kind"), get("strength")
    box = selection_box(image) or (0, 0, image.get_width(), image.get_height())
    exclude = [c.layer for _layer, c in control_layers(image)]
    picture = editing.Image.rgba(box[2], box[3], visible_composite(image, box, exclude))
    url = easel_jobs.resolve_url(get("url"))
    guide = easel_jobs.run_work(url, lambda client, on_progress: client.preprocess(kind, picture, on_progress),
                                token=easel_jobs.resolve_token(config, url), dialog=dialog)
    if guide is None:
        return None
    if guide.format != "rgba" or (guide.width, guide.height) != box[2:]:
        raise EaselError(f"the server sent a {guide.format} {guide.width}×{guide.height} guide; expected "
                         f"raw RGBA {box[2]}×{box[3]}")
    image.undo_group_start()
    try:
        layer = Gimp.Layer.new(image, editing.controls.guide_name(kind), guide.width, guide.height,
                               layer_type(image), 100.0, Gimp.LayerMode.NORMAL)
        image.insert_layer(layer, None, 0)
        layer.set_offsets(box[0], box[1])
        buffer = layer.get_buffer()
        buffer.set(Gegl.Rectangle.new(0, 0, guide.width, guide.height), RGBA, guide.data)
        buffer.flush()
        layer.update(0, 0, guide.width, guide.height)
        mark(layer, editing.ControlLayer(str(layer.get_tattoo()), kind, strength))
    finally:
        image.undo_group_end()
    Gimp.displays_flush()
    easel_jobs.remember_server(url, config)
    return [GObject.Value(Gimp.Layer, layer)]
