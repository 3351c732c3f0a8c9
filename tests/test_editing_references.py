"""Reference layers (kinds reference, style, composition, face) in the editor-independent builder: a
reference is sent whole, at its own bounds, whatever the request covers, beside a line-art layer cropped to
the request's box and made white on black; no step range and no model; live frames send it as Generate
does; an empty one is a plain-words problem."""

from __future__ import annotations

import pytest

from easel.client import editing
from easel.client.editing import Params, RequestProblem, build_request, controls
from easel.client.protocol import REFERENCE_KINDS, Control

W, H = 96, 80
REF_BOX = (50, 6, 40, 30)  # the reference layer's own pixels: smaller than the canvas, at an offset
SELECTION = (10, 40, 20, 16)


def pixels(w: int, h: int, seed: int, alpha: int = 255) -> bytes:
    return bytes(v for i in range(w * h) for v in ((i * seed) % 256, (i * 7 + seed) % 256, seed, alpha))


class Document:
    """A canvas, layers at their own bounds (id -> (box, RGBA over it)) and a selection; records every read."""

    def __init__(self, selection: tuple[int, int, int, int] | None = None):
        lines = bytearray(pixels(W, H, 0, 0))  # transparent paper with dark lines every 8th column
        for i in range(0, W * H, 8):
            lines[4 * i : 4 * i + 4] = bytes((20, 20, 20, 255))
        self.layers = {"ref": (REF_BOX, pixels(*REF_BOX[2:], 3)), "lines": ((0, 0, W, H), bytes(lines)),
                       "empty": (None, b"")}
        self.box = selection
        self.reads: list[tuple[str, tuple]] = []

    def size(self) -> tuple[int, int]:
        return W, H

    def selection_box(self):
        return self.box

    def read_canvas(self, box, exclude=()) -> bytes:
        return editing.crop_bytes(pixels(W, H, 9), W, 4, *box)

    def layer_bounds(self, layer: str):
        return self.layers[layer][0]

    def read_layer(self, layer: str, box) -> bytes:
        self.reads.append((layer, tuple(box)))
        (lx, ly, lw, _lh), rgba = self.layers[layer]
        x, y, w, h = box
        return editing.crop_bytes(rgba, lw, 4, x - lx, y - ly, w, h)

    def read_selection(self, box) -> bytes:
        x, y, w, h = box
        sx, sy, sw, sh = self.box
        return bytes(255 if sx <= x + i % w < sx + sw and sy <= y + i // w < sy + sh else 0 for i in range(w * h))


LAYERS = [controls.settings("ref", "style", 0.7), controls.ControlLayer("lines", "lineart", 0.8, 0.0, 0.6)]


@pytest.mark.parametrize("selection, strength", [(None, 1.0), (None, 0.5), (SELECTION, 1.0)])
def test_a_reference_is_sent_whole_and_line_art_over_the_requests_box(selection, strength):
    doc = Document(selection)
    planned = build_request(doc, Params("a cat", strength=strength, seed=3), controls=LAYERS)
    box = (0, 0, W, H) if selection is None else (planned.request.x, planned.request.y, planned.image.width,
                                                  planned.image.height)
    if selection is not None:
        assert box != (0, 0, W, H) and planned.mode == editing.INPAINT  # the selection's context region
    assert doc.reads == [("ref", REF_BOX), ("lines", box)]
    assert planned.request.controls == [Control("style", "controls.0.image", 0.7, 0.0, 1.0),
                                        Control("lineart", "controls.1.image", 0.8, 0.0, 0.6)]
    ref, lines = planned.attachments["controls.0.image"], planned.attachments["controls.1.image"]
    assert (ref.width, ref.height, ref.data) == (40, 30, doc.layers["ref"][1])  # as painted: not cropped, not resized
    x, y, w, h = box
    want = editing.sketch_guide(editing.crop_bytes(doc.layers["lines"][1], W, 4, x, y, w, h))[0]
    assert (lines.width, lines.height, lines.data) == (w, h, want)  # white lines on black, over the box
    inked = {v for v, a in zip(lines.data[0::4], lines.data[3::4]) if a}
    assert inked == {255 - 20}  # the dark lines inverted (the server lays the guide over black)


def test_a_switched_off_reference_is_neither_read_nor_sent():
    doc = Document()
    off = [controls.settings("ref", "face", 1.0, enabled=False), LAYERS[1]]
    planned = build_request(doc, Params("a cat", strength=0.5, seed=3), controls=off)
    assert [c.kind for c in planned.request.controls] == ["lineart"]
    assert list(planned.attachments) == ["controls.0.image"] and [r[0] for r in doc.reads] == ["lines"]


@pytest.mark.parametrize("kind", REFERENCE_KINDS)
def test_reference_kinds_have_no_range_and_no_model(kind):
    assert not controls.has_range(kind)
    layer = controls.settings("ref", kind, 0.5, 0.2, 0.7)  # what the panel's disabled range fields still hold
    assert (layer.start, layer.end) == (0.0, 1.0)
    layer.check()
    assert controls.from_text(controls.to_text([layer])) == [layer]  # stored and read back
    with pytest.raises(ValueError, match=r"'start' must be 0 for a .* layer"):
        controls.ControlLayer("ref", kind, 0.5, 0.2, 1.0).check()
    items, _ = controls.control_items([layer], Document().read_layer, (0, 0, W, H), Document().layer_bounds)
    assert items[0].model is None  # the server picks the IP-Adapter


def test_controlnet_kinds_keep_their_range():
    assert controls.has_range("depth")
    assert (controls.settings("x", "depth", 0.5, 0.2, 0.7).start, controls.settings("x", "depth", 0.5, 0.2, 0.7).end) \
        == (0.2, 0.7)


def test_an_empty_reference_layer_is_a_problem_in_plain_words():
    with pytest.raises(RequestProblem, match=r"control layer \(composition\): the layer is empty: paste the "
                                             r"reference picture on it, or switch it off"):
        build_request(Document(), Params("a cat", seed=3), controls=[controls.settings("empty", "composition", 1.0)])


def test_control_items_needs_the_layers_bounds_for_a_reference():
    with pytest.raises(TypeError, match="layer_bounds"):
        controls.control_items(LAYERS, Document().read_layer, (0, 0, W, H))


@pytest.mark.parametrize("selection", [None, SELECTION])
def test_a_live_frame_sends_the_reference_as_generate_does(selection):
    doc, params = Document(selection), Params("a red cat", strength=0.6, seed=5, steps=4)
    state = editing.read_state(doc, params.strength, exclude=[c.layer for c in LAYERS])
    frame = editing.control_items(LAYERS, doc.read_layer, state.box, doc.layer_bounds)
    live = editing.plan_live(state, params, None, frame)
    generate = build_request(doc, params, controls=LAYERS)
    assert live.request.controls == generate.request.controls
    assert live.attachments == generate.attachments
    keys = editing.frame_keys(state, params, frame)
    doc.layers["ref"] = (REF_BOX, pixels(*REF_BOX[2:], 4))  # a change on the reference layer sends a frame
    changed = editing.frame_keys(state, params, editing.control_items(LAYERS, doc.read_layer, state.box,
                                                                       doc.layer_bounds))
    assert changed[0] != keys[0] and changed[1] == keys[1]
