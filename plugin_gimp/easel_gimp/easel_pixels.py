"""Pixels in and out of a GIMP 3 image through Gegl buffers.

Everything travels as 8-bit non-linear sRGB (``R'G'B'A u8``): Gegl converts from and to the
image's own precision (16/32-bit, linear or not) and from grey images, so the server always
gets the 8-bit RGBA the protocol carries.
"""

from __future__ import annotations

import json

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp  # noqa: E402
from shared import editing  # noqa: E402

RGBA = "R'G'B'A u8"
# GIMP stores the selection as a linear mask ("Y u8" in 8-bit images): reading it as "Y u8"
# gives exactly the values Gimp.Selection.value reports, soft edges included. Reading it as
# "Y' u8" would pass them through the sRGB curve (a 50% feather would arrive as 74%).
MASK = "Y u8"

Box = tuple[int, int, int, int]


class EaselError(Exception):
    """A problem the painter can act on; its text is shown as is."""


class CallingError(EaselError):
    """Bad input from the caller: no image, no selection, parameters out of range."""


def _read(buffer, box: Box, fmt: str) -> bytes:
    x, y, w, h = box
    return bytes(buffer.get(Gegl.Rectangle.new(x, y, w, h), 1.0, fmt, Gegl.AbyssPolicy.NONE))


def check_image(image) -> None:
    if image is None:
        raise CallingError("no image is open: open or create an image first (File > New…)")
    if image.get_base_type() == Gimp.ImageBaseType.INDEXED:
        raise CallingError("this image is indexed: convert it with Image > Mode > RGB first")


def selection_box(image) -> Box | None:
    """Bounds (x, y, w, h) of the selection, or None when nothing is selected."""
    _ok, non_empty, x1, y1, x2, y2 = Gimp.Selection.bounds(image)
    if not non_empty or x2 <= x1 or y2 <= y1:
        return None
    return x1, y1, x2 - x1, y2 - y1


def selection_mask(image, box: Box) -> bytes:
    """The selection's coverage (0..255 per pixel, soft values kept) inside ``box``."""
    return _read(image.get_selection().get_buffer(), box, MASK)


def visible_composite(image, box: Box, exclude=()) -> bytes:
    """RGBA of what the image shows (visible layers, their modes, opacity and masks) in ``box``;
    the layers whose tattoos ``exclude`` names (control layers) are left out.

    Works on a throw-away duplicate, so the painter's image and its undo history stay as they are.
    """
    wanted = {str(t) for t in exclude}
    paths = list(_paths(image.get_layers(), wanted))
    dup = image.duplicate()
    try:
        dup.undo_disable()
        # the duplicate's layers stand where the image's do (their tattoos are new ones): find them by place
        for layer in [_at(dup.get_layers(), path) for path in paths]:
            dup.remove_layer(layer)
        # A transparent full-size layer at the bottom makes the merge a real one even when a
        # single layer is visible (GIMP would hand that layer back as is: no opacity, no mask).
        base = Gimp.Layer.new(dup, "easel-base", dup.get_width(), dup.get_height(), layer_type(dup), 100.0,
                              Gimp.LayerMode.NORMAL)
        dup.insert_layer(base, None, len(dup.get_layers()))
        base.fill(Gimp.FillType.TRANSPARENT)
        merged = dup.merge_visible_layers(Gimp.MergeType.CLIP_TO_IMAGE)
        _ok, ox, oy = merged.get_offsets()
        x, y, w, h = box
        return _read(merged.get_buffer(), (x - ox, y - oy, w, h), RGBA)
    finally:
        dup.delete()


def _paths(layers, wanted: set[str], prefix: tuple[int, ...] = ()):
    """The places (indices from the top, through groups) of the layers whose tattoos ``wanted`` names."""
    for i, layer in enumerate(layers):
        if str(layer.get_tattoo()) in wanted:
            yield (*prefix, i)
        elif layer.is_group():
            yield from _paths(layer.get_children(), wanted, (*prefix, i))


def _at(layers, path: tuple[int, ...]):
    layer = layers[path[0]]
    for i in path[1:]:
        layer = layer.get_children()[i]
    return layer


class GimpDocument:
    """A GIMP image as ``editing.Document``: what ``editing.build_request`` reads from it."""

    def __init__(self, image):
        self.image = image

    def size(self) -> tuple[int, int]:
        return self.image.get_width(), self.image.get_height()

    def selection_box(self) -> Box | None:
        return selection_box(self.image)

    def read_canvas(self, box: Box, exclude=()) -> bytes:
        return visible_composite(self.image, box, exclude)

    def read_layer(self, layer: str, box: Box) -> bytes:
        """One layer's own pixels (``layer``: its tattoo), whatever its visibility or opacity."""
        drawable = self.image.get_layer_by_tattoo(int(layer))
        if drawable is None:
            raise CallingError("a control layer was deleted: pick the control layers again")
        _ok, ox, oy = drawable.get_offsets()
        x, y, w, h = box
        return _read(drawable.get_buffer(), (x - ox, y - oy, w, h), RGBA)

    def layer_bounds(self, layer: str) -> Box:
        """The layer's offsets and size: a reference layer is sent whole."""
        drawable = self.image.get_layer_by_tattoo(int(layer))
        if drawable is None:
            raise CallingError("a control layer was deleted: pick the control layers again")
        _ok, ox, oy = drawable.get_offsets()
        return ox, oy, drawable.get_width(), drawable.get_height()

    def read_selection(self, box: Box) -> bytes:
        return selection_mask(self.image, box)


def layer_type(image):
    return Gimp.ImageType.GRAYA_IMAGE if image.get_base_type() == Gimp.ImageBaseType.GRAY else Gimp.ImageType.RGBA_IMAGE


PARASITE = "easel-parameters"  # on each result layer: JSON of editing.result_record (job, seed, parameters)


def insert_results(image, result, prompt: str) -> list:
    """Add each image of ``result`` as a new top layer at its document offset, all in one undo step.

    Each layer is named ``Easel: <prompt> [<seed>]`` and carries the job id and the parameters the
    server used in the persistent parasite ``easel-parameters`` (kept in XCF files)."""
    layers = []
    image.undo_group_start()
    try:
        for i, res in enumerate(result.images):
            img = res.image
            if img.format != "rgba":
                raise EaselError(f"the server sent a {img.format!r} image; this plug-in asks for raw RGBA")
            w, h = img.width, img.height
            layer = Gimp.Layer.new(image, editing.layer_name(prompt, res.seed), w, h, layer_type(image), 100.0,
                                   Gimp.LayerMode.NORMAL)
            image.insert_layer(layer, None, 0)
            layer.set_offsets(res.x, res.y)
            buffer = layer.get_buffer()
            buffer.set(Gegl.Rectangle.new(0, 0, w, h), RGBA, img.data)
            buffer.flush()
            layer.update(0, 0, w, h)
            record = json.dumps(editing.result_record(result, i), separators=(",", ":")).encode()
            layer.attach_parasite(Gimp.Parasite.new(PARASITE, Gimp.PARASITE_PERSISTENT, list(record)))
            layers.append(layer)
    finally:
        image.undo_group_end()
    Gimp.displays_flush()
    return layers


def open_as_new_image(result, source, prompt: str):
    """A new image the size of the (first) result, holding the result's layers at 0, 0, in the
    source image's precision (the upscale's document; nothing in ``source`` changes)."""
    first = result.images[0].image
    new = Gimp.Image.new(first.width, first.height, Gimp.ImageBaseType.RGB)
    new.undo_disable()  # a fresh document starts with an empty undo history
    try:
        for res in result.images:
            res.x = res.y = 0  # the whole upscaled canvas; its document offset was scaled by the factor
        insert_results(new, result, prompt)
        if source.get_precision() != new.get_precision():
            new.convert_precision(source.get_precision())
        _ok, xres, yres = source.get_resolution()
        new.set_resolution(xres, yres)
    finally:
        new.undo_enable()
    return new
