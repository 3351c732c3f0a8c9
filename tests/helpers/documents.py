"""A fake editor document over numpy arrays, for ``easel.client.editing.build_request`` (its ``Document``)."""

from __future__ import annotations

import numpy as np

Box = tuple[int, int, int, int]


class ArrayDocument:
    """A picture (HxWx4 uint8) with a rectangular selection ``box`` (None: nothing selected); records every read
    as ``(what, box)``. The editors' own adapters are plugin_krita/easel_krita/document.py and GIMP's easel_pixels."""

    def __init__(self, picture: np.ndarray, box: Box | None = None):
        self.picture = np.ascontiguousarray(picture, np.uint8)
        self.box = box
        height, width = self.picture.shape[:2]
        self.mask = np.zeros((height, width), np.uint8)
        if box is not None:
            x, y, w, h = box
            self.mask[y : y + h, x : x + w] = 255
        self.reads: list[tuple[str, Box]] = []

    def size(self) -> tuple[int, int]:
        return self.picture.shape[1], self.picture.shape[0]

    def selection_box(self) -> Box | None:
        return self.box

    def read_canvas(self, box: Box, exclude=()) -> bytes:
        self.reads.append(("canvas", tuple(box)))
        x, y, w, h = box
        return self.picture[y : y + h, x : x + w].tobytes()

    def read_layer(self, layer: str, box: Box) -> bytes:
        raise AssertionError(f"this document has no layer {layer!r}")

    def layer_bounds(self, layer: str) -> Box | None:
        raise AssertionError(f"this document has no layer {layer!r}")

    def read_selection(self, box: Box) -> bytes:
        self.reads.append(("selection", tuple(box)))
        x, y, w, h = box
        return self.mask[y : y + h, x : x + w].tobytes()
