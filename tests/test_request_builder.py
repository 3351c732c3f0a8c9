"""The editor-independent request builder (``editing.build_request``) on a fake document.

Both plugins wrap their editor's document in an ``editing.Document`` and call the builder; here a
plain-Python document stands in for Krita's and GIMP's, so what is read and sent is checked fast.
"""

from __future__ import annotations

import pytest

from easel.client import editing
from easel.client.editing import IMG2IMG, INPAINT, TXT2IMG, Features, Params, RequestProblem, build_request
from easel.client.protocol import GenerateRequest


class FakeDocument:
    """A ``width`` x ``height`` RGBA picture and a gray8 selection; records every read."""

    def __init__(self, width: int, height: int, selection: tuple[int, int, int, int] | None = None,
                 soft: int = 255, paper: int = 255):
        self.width, self.height = width, height
        # dark lines (0) every 4th column on light paper: a dark-on-light sketch
        self.rgba = bytearray()
        for _y in range(height):
            for x in range(width):
                v = 0 if x % 4 == 0 else paper
                self.rgba += bytes((v, v, v, 255))
        self.mask = bytearray(width * height)
        self.box = selection
        if selection:
            sx, sy, sw, sh = selection
            for y in range(sy, sy + sh):
                self.mask[y * width + sx : y * width + sx + sw] = bytes([soft]) * sw
        self.reads: list[tuple[str, tuple[int, int, int, int]]] = []
        self.layers: dict[str, bytes] = {}  # control layers: id -> RGBA of the whole document
        self.excluded: list[str] = []

    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def selection_box(self) -> tuple[int, int, int, int] | None:
        return self.box

    def read_canvas(self, box: tuple[int, int, int, int], exclude=()) -> bytes:
        self.reads.append(("canvas", tuple(box)))
        self.excluded = list(exclude)
        return editing.crop_bytes(bytes(self.rgba), self.width, 4, *box)

    def read_layer(self, layer: str, box: tuple[int, int, int, int]) -> bytes:
        self.reads.append((f"layer {layer}", tuple(box)))
        return editing.crop_bytes(self.layers[layer], self.width, 4, *box)

    def layer_bounds(self, layer: str) -> tuple[int, int, int, int]:
        return 0, 0, self.width, self.height

    def read_selection(self, box: tuple[int, int, int, int]) -> bytes:
        self.reads.append(("selection", tuple(box)))
        return editing.crop_bytes(bytes(self.mask), self.width, 1, *box)


def test_generate_reads_nothing_and_asks_for_the_document_size():
    doc = FakeDocument(96, 64)
    planned = build_request(doc, Params("a red circle", seed=5))
    assert planned.mode == TXT2IMG and planned.image is None and planned.mask is None
    r = planned.request
    assert (r.width, r.height, r.canvas_width, r.canvas_height, r.seed) == (96, 64, 96, 64, 5)
    assert doc.reads == []


def test_refine_sends_the_whole_visible_canvas():
    doc = FakeDocument(64, 48)
    planned = build_request(doc, Params("a cat", strength=0.4))
    assert planned.mode == IMG2IMG and planned.mask is None
    assert (planned.image.width, planned.image.height) == (64, 48)
    assert planned.image.data == bytes(doc.rgba)
    assert (planned.request.x, planned.request.y, planned.request.strength) == (0, 0, 0.4)
    assert doc.reads == [("canvas", (0, 0, 64, 48))]


def test_selection_sends_its_context_region_with_the_soft_mask():
    doc = FakeDocument(256, 256, selection=(100, 110, 20, 10), soft=128)
    planned = build_request(doc, Params("a dog", strength=1.0))
    assert planned.mode == INPAINT
    x, y, w, h = editing.read_plan(256, 256, doc.box, 1.0)[1]
    assert (planned.request.x, planned.request.y, planned.image.width, planned.image.height) == (x, y, w, h)
    assert x <= 100 and y <= 110 and x + w >= 120 and y + h >= 120  # the context contains the selection
    assert planned.mask.data == editing.crop_bytes(bytes(doc.mask), 256, 1, x, y, w, h)
    assert set(planned.mask.data) == {0, 128}  # soft values kept
    assert doc.reads == [("selection", (x, y, w, h)), ("canvas", (x, y, w, h))]


def test_use_selection_false_leaves_the_selection_alone():
    doc = FakeDocument(64, 64, selection=(8, 8, 16, 16))
    assert build_request(doc, Params("p", strength=1.0), use_selection=False).mode == TXT2IMG
    sketch = build_request(doc, Params("p", strength=0.6), use_selection=False)
    assert sketch.mode == IMG2IMG and sketch.mask is None and sketch.image.width == 64


def test_sketch_guide_covers_what_is_sent_and_inverts_a_dark_on_light_sketch():
    doc = FakeDocument(64, 32)
    features = Features(control_model="sketch-net", control_strength=0.7)
    txt = build_request(doc, Params("p"), features)  # text to image: the guide is the whole canvas
    assert (txt.control.width, txt.control.height) == (64, 32)
    assert txt.control.data[:4] == bytes((255, 255, 255, 255))  # a dark line became white on black
    assert txt.control.data[4:8] == bytes((0, 0, 0, 255))
    assert txt.request.control_model == "sketch-net" and txt.request.control_strength == 0.7

    doc = FakeDocument(256, 256, selection=(100, 100, 16, 16))
    inpaint = build_request(doc, Params("p"), features)
    assert (inpaint.control.width, inpaint.control.height) == (inpaint.image.width, inpaint.image.height)
    assert [kind for kind, _ in doc.reads] == ["selection", "canvas"]  # the guide reuses the read canvas


def test_no_control_model_means_no_guide_and_the_request_matches_plain_planning():
    doc = FakeDocument(64, 64)
    planned = build_request(doc, Params("p", strength=0.5), Features(variation_seed=3, variation_strength=0.2))
    assert planned.control is None
    assert (planned.request.variation_seed, planned.request.variation_strength) == (3, 0.2)
    plain = editing.plan_request(editing.read_state(FakeDocument(64, 64), 0.5), Params("p", strength=0.5))
    same = {k: v for k, v in planned.request.to_message().items() if k not in ("job", "variation_seed",
                                                                                   "variation_strength")}
    assert same == {k: v for k, v in plain.request.to_message().items() if k not in ("job", "variation_seed",
                                                                                        "variation_strength")}


def test_a_request_the_server_would_refuse_is_a_plain_words_problem():
    with pytest.raises(RequestProblem, match="steps"):
        build_request(FakeDocument(64, 64), Params("p", steps=0))
    with pytest.raises(ValueError, match="batch"):  # a RequestProblem is a ValueError for the plugins
        build_request(FakeDocument(64, 64), Params("p", batch=99))


def test_the_built_request_passes_the_server_check():
    planned = build_request(FakeDocument(128, 96, selection=(10, 10, 30, 30)), Params("p", seed=9, batch=2))
    again = GenerateRequest.from_message(planned.request.to_message())
    assert (again.seed, again.batch, again.x, again.y) == (9, 2, planned.request.x, planned.request.y)


def layer_of(doc: FakeDocument, rgba: tuple[int, int, int, int]) -> bytes:
    return bytes(rgba) * (doc.width * doc.height)


def test_control_layers_go_as_controls_with_their_own_pixels_and_stay_out_of_the_canvas():
    doc = FakeDocument(256, 256, selection=(100, 110, 20, 10))
    lines = b"".join(bytes((0, 0, 0, 255) if i % 4 == 0 else (0, 0, 0, 0)) for i in range(256 * 256))  # ink, no paper
    doc.layers = {"lines": lines, "depth": layer_of(doc, (90, 90, 90, 255)),
                  "off": layer_of(doc, (1, 2, 3, 255))}
    layers = [editing.ControlLayer("lines", "lineart", 0.8, 0.0, 0.7), editing.ControlLayer("depth", "depth", 0.5),
              editing.ControlLayer("off", "pose", enabled=False)]
    planned = build_request(doc, Params("p"), controls=layers)
    x, y, w, h = planned.request.x, planned.request.y, planned.image.width, planned.image.height
    assert doc.excluded == ["lines", "depth", "off"]  # no control layer is part of the sent canvas
    assert [(c.kind, c.image, c.strength, c.start, c.end) for c in planned.request.controls] == [
        ("lineart", "controls.0.image", 0.8, 0.0, 0.7), ("depth", "controls.1.image", 0.5, 0.0, 1.0)]
    lines, depth = planned.attachments["controls.0.image"], planned.attachments["controls.1.image"]
    assert (lines.width, lines.height, depth.width, depth.height) == (w, h, w, h)  # what is sent, no more
    ink = editing.crop_bytes(doc.layers["lines"], 256, 4, x, y, w, h)
    assert lines.data == editing.sketch_guide(ink)[0] != ink  # line kinds: dark on (transparent) paper inverted
    assert depth.data == bytes((90, 90, 90, 255)) * (w * h)  # other kinds as painted
    assert ("layer off", (x, y, w, h)) not in doc.reads
    wire = GenerateRequest.from_message(planned.request.to_message())
    assert [c.image for c in wire.controls] == list(planned.attachments)


def test_text_to_image_reads_control_layers_over_the_whole_canvas_and_bad_settings_are_problems():
    doc = FakeDocument(96, 64)
    doc.layers = {"d": layer_of(doc, (5, 5, 5, 255))}
    planned = build_request(doc, Params("p"), controls=[editing.ControlLayer("d", "depth")])
    assert (planned.attachments["controls.0.image"].width, planned.attachments["controls.0.image"].height) == (96, 64)
    assert doc.reads == [("layer d", (0, 0, 96, 64))]
    with pytest.raises(RequestProblem, match="'end' must be at least 'start'"):
        build_request(doc, Params("p"), controls=[editing.ControlLayer("d", "depth", start=0.8, end=0.2)])
    with pytest.raises(RequestProblem, match="'kind' must be one of"):
        build_request(doc, Params("p"), controls=[editing.ControlLayer("d", "sparkles")])


def test_control_layers_travel_with_the_document_as_text():
    layers = [editing.ControlLayer("{a-1}", "depth", 0.5, 0.1, 0.9), editing.ControlLayer("7", "pose", enabled=False)]
    assert editing.controls_from_text(editing.controls_to_text(layers)) == layers
    damaged = '[{"layer": "x", "kind": "sparkles"}, {"kind": "depth"}, 3, {"layer": "y", "kind": "canny"}]'
    assert editing.controls_from_text(damaged) == [editing.ControlLayer("y", "canny")]
    assert editing.controls_from_text("not json") == [] and editing.controls_from_text(None) == []


def test_control_layers_follow_the_kinds_the_chosen_model_can_use():
    from easel.client.editing import controls
    from easel.server.generation import check_named_attachments

    welcome = {"default_model": "sd", "models": [{"id": "sd", "controls": ["lineart", "depth", "warp"]},
                                                 {"id": "flux", "controls": []}, {"id": "old"}]}
    assert controls.model_kinds(welcome, None) == ["lineart", "depth"]  # the default model; unknown kinds dropped
    assert controls.model_kinds(welcome, "flux") == [] and controls.model_kinds(welcome, "old") == []

    class Recorder:  # what generate_work hands the connection (the server's own check judges it)
        welcome = None

        def generate(self, request, image, mask, on_progress, control=None, attachments=None):
            check_named_attachments(request, {"image": image, **attachments})
            return request.controls, attachments

    doc = FakeDocument(32, 32)
    doc.layers = {"a": layer_of(doc, (0, 0, 0, 255)), "b": layer_of(doc, (9, 9, 9, 255))}
    layers = [editing.ControlLayer("a", "lineart"), editing.ControlLayer("b", "depth")]
    for model, kept in (("flux", False), ("sd", True), ("old", True)):  # "old": a welcome without the key
        planned = build_request(doc, Params("p", model=model, strength=0.5), controls=layers)
        assert len(planned.request.controls) == 2 and len(planned.attachments) == 2
        Recorder.welcome = welcome
        sent_controls, sent = editing.generate_work(planned)(Recorder())
        assert (sent_controls is not None, sorted(sent)) == (
            (True, ["controls.0.image", "controls.1.image"]) if kept else (False, [])), model
        assert doc.excluded[-2:] == ["a", "b"]  # never part of the canvas either way
    assert controls.guide_name("depth") == "Easel guide: depth"
