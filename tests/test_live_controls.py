"""Live frames carry the enabled control layers as ``controls``, read as Generate reads them: the same kinds,
settings and pixels as ``build_request`` for the same document (a switched-off layer left out, line kinds white
on black), a stroke on a control layer or a changed setting makes a new frame due, and a frame through
``LiveConnection`` to a real server with a tiny ControlNet is steered, equal to Generate's request."""

from __future__ import annotations

import pytest

from easel.client import editing
from easel.client.connection import Client
from easel.client.editing import ControlLayer, LiveConnection, LiveSession, Params
from helpers.probes import wait_until

SIZE = 64
LAYERS = [ControlLayer("lines", "lineart", 0.8, 0.0, 0.7), ControlLayer("off", "depth", enabled=False),
          ControlLayer("depth", "depth", 0.5, 0.2, 1.0)]


def picture(v: int) -> bytes:
    """An opaque gray picture with a darker ramp along x."""
    return b"".join(bytes((max(0, v - x), v, v, 255)) for _ in range(SIZE) for x in range(SIZE))


def lines(dark: int = 0) -> bytes:
    """Dark vertical lines every 8th column on white paper: a line-art layer as painted."""
    return b"".join(bytes((dark, dark, dark, 255) if x % 8 == 0 else (255, 255, 255, 255))
                    for _ in range(SIZE) for x in range(SIZE))


class Document:
    """A canvas, control layers (id -> RGBA of the whole document) and a selection; records the layers read."""

    def __init__(self, selection: tuple[int, int, int, int] | None = None):
        self.canvas = picture(160)
        self.layers = {"lines": lines(), "depth": picture(200), "off": picture(90)}
        self.box = selection
        self.mask = bytearray(SIZE * SIZE)
        if selection:
            x, y, w, h = selection
            for row in range(y, y + h):
                self.mask[row * SIZE + x : row * SIZE + x + w] = b"\xff" * w
        self.read: list[str] = []

    def size(self) -> tuple[int, int]:
        return SIZE, SIZE

    def selection_box(self):
        return self.box

    def read_canvas(self, box, exclude=()) -> bytes:
        return editing.crop_bytes(self.canvas, SIZE, 4, *box)

    def read_layer(self, layer: str, box) -> bytes:
        self.read.append(layer)
        return editing.crop_bytes(self.layers[layer], SIZE, 4, *box)

    def layer_bounds(self, layer: str) -> tuple[int, int, int, int]:
        return 0, 0, SIZE, SIZE

    def read_selection(self, box) -> bytes:
        return editing.crop_bytes(bytes(self.mask), SIZE, 1, *box)

    def live_frame(self, params: Params, layers=LAYERS) -> tuple[editing.EditorState, editing.live.FrameControls]:
        """What the Krita plugin reads for a live frame: the state without control layers, then the layers."""
        state = editing.read_state(self, params.strength, exclude=[c.layer for c in layers])
        return state, editing.control_items(layers, self.read_layer, state.box)


@pytest.mark.parametrize("selection", [None, (20, 24, 16, 12)])
def test_a_live_frame_sends_the_enabled_control_layers_as_generate_does(selection):
    doc, params = Document(selection), Params("a red cat", strength=0.6, seed=5, steps=4)
    state, controls = doc.live_frame(params)
    live = editing.plan_live(state, params, None, controls)
    doc.read.clear()
    generate = editing.build_request(doc, params, controls=LAYERS)
    assert "off" not in doc.read  # a switched-off layer is not even read
    assert [(c.kind, c.image, c.strength, c.start, c.end) for c in live.request.controls] == [
        ("lineart", "controls.0.image", 0.8, 0.0, 0.7), ("depth", "controls.1.image", 0.5, 0.2, 1.0)]
    assert live.request.controls == generate.request.controls
    assert live.attachments == generate.attachments
    x, y, w, h = state.box
    lineart, depth = live.attachments["controls.0.image"], live.attachments["controls.1.image"]
    assert (lineart.width, lineart.height) == (depth.width, depth.height) == (live.image.width, live.image.height)
    assert depth.data == editing.crop_bytes(doc.layers["depth"], SIZE, 4, x, y, w, h)
    white_line = next(i for i in range(w) if (x + i) % 8 == 0)  # the dark line painted, sent white on black
    assert lineart.data[4 * white_line : 4 * white_line + 3] == b"\xff\xff\xff"
    assert editing.check_request(live) is None
    assert editing.fit_attachments(live.request, live.attachments) == live.attachments  # every one is named


def test_control_layers_make_frames_due():
    doc, params = Document(), Params("a red cat", strength=1.0, seed=5, steps=4)  # text to image: no canvas
    session = LiveSession(5, clock=lambda: 0.0)

    def observe(layers=LAYERS) -> bool:
        state, controls = doc.live_frame(params, layers)
        session.observe(*editing.frame_keys(state, params, controls))
        return session.due()

    assert observe()
    session.sent("one")
    session.finished("one", True)
    assert not observe()  # nothing changed
    doc.layers["off"] = picture(10)
    assert not observe()  # a stroke on a switched-off layer changes nothing sent
    doc.layers["lines"] = lines(dark=40)
    assert observe()  # a stroke on a control layer: a new frame, even in text to image
    session.sent("two")
    session.finished("two", True)
    weaker = [ControlLayer("lines", "lineart", 0.6, 0.0, 0.7), *LAYERS[1:]]
    assert not observe(weaker) and session.pending  # a setting: sent after a pause, like any parameter
    assert session.due(now=1.0)
    session.sent("three")
    session.finished("three", True)
    assert not observe(weaker)
    observe(weaker[:2])  # the depth layer switched off
    assert session.pending


@pytest.fixture(scope="module")
def served(tiny_sd_path, tmp_path_factory):
    from easel.server.engine import Engine
    from helpers.server_harness import inprocess_server
    from helpers.tiny_models import build_tiny_controlnet

    net = build_tiny_controlnet(tiny_sd_path, tmp_path_factory.mktemp("live") / "control_v11p_sd15_lineart", seed=1)
    engine = Engine([str(tiny_sd_path)], device="cpu", dtype="float32", control_models=[net])
    with inprocess_server(engine) as (url, _):
        yield url


def test_a_live_frame_through_the_server_is_steered_like_generate(served):
    doc, params = Document(), Params("a red cat", strength=0.6, seed=5, steps=4)
    layers = [ControlLayer("lines", "lineart", 0.9)]
    results: dict[str, object] = {}
    conn = LiveConnection(served, lambda kind, job, payload: results.setdefault(job, (kind, payload)))
    try:
        state, controls = doc.live_frame(params, layers)
        frames = [editing.plan_live(state, params, None, controls), editing.plan_live(state, params)]
        for frame in frames:
            conn.submit(frame)
            assert wait_until(lambda job=frame.request.job: job in results, timeout=60, step=0.05)
    finally:
        conn.close()
    (kind, steered), (_, plain) = (results[f.request.job] for f in frames)
    assert kind == "result", steered
    assert steered.parameters["controls"] == [{"kind": "lineart", "strength": 0.9, "start": 0.0, "end": 1.0,
                                               "model": "control_v11p_sd15_lineart"}]
    assert steered.images[0].image.data != plain.images[0].image.data  # the layer steers
    generate = editing.build_request(doc, params, controls=layers)
    with Client(served, image_format="rgba") as client:
        direct = client.generate(generate.request, generate.image, attachments=generate.attachments)
    assert steered.images[0].image.data == direct.images[0].image.data
