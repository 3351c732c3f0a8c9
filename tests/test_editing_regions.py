"""Region layers in the editors (``editing.regions``): ``build_request`` sends each enabled region layer's alpha
over exactly what the request covers as a region mask with its prompt, the layers stay in the canvas, stored
lists round-trip, ``fit_to_model`` drops regions for models without the feature, live frames carry them as
Generate does, and a request built from two half-canvas region layers runs on a real server."""

from __future__ import annotations

import pytest

from easel.client import editing
from easel.client.editing import Params, RegionLayer, RequestProblem, build_request, regions
from easel.client.protocol import MAX_REGIONS

W, H = 64, 32


def half(left: bool, alpha: int = 255) -> bytes:
    """A layer painted (red, opaque) on the left or right half of the document, transparent elsewhere."""
    return b"".join(bytes((200, 10, 10, alpha)) if (x < W // 2) == left else bytes(4)
                    for _ in range(H) for x in range(W))


class Document:
    """A gray canvas, region layers (id -> RGBA of the whole document) and a selection; records reads."""

    def __init__(self, selection: tuple[int, int, int, int] | None = None):
        self.canvas = b"".join(bytes((x * 4, 120, 60, 255)) for _ in range(H) for x in range(W))
        self.layers = {"left": half(True), "right": half(False, alpha=128), "empty": bytes(W * H * 4)}
        self.box = selection
        self.mask = bytearray(W * H)
        if selection:
            x, y, w, h = selection
            for row in range(y, y + h):
                self.mask[row * W + x : row * W + x + w] = b"\xff" * w
        self.read: list[str] = []
        self.excluded: list[str] = []

    def size(self) -> tuple[int, int]:
        return W, H

    def selection_box(self):
        return self.box

    def read_canvas(self, box, exclude=()) -> bytes:
        self.excluded = list(exclude)
        return editing.crop_bytes(self.canvas, W, 4, *box)

    def read_layer(self, layer: str, box) -> bytes:
        self.read.append(layer)
        return editing.crop_bytes(self.layers[layer], W, 4, *box)

    def layer_bounds(self, layer: str):
        return 0, 0, W, H

    def read_selection(self, box) -> bytes:
        return editing.crop_bytes(bytes(self.mask), W, 1, *box)


LAYERS = [RegionLayer("left", "a red apple"), RegionLayer("off", "never read", enabled=False),
          RegionLayer("right", "a blue pear", "green")]


def test_text_to_image_sends_each_layers_alpha_over_the_canvas_as_a_region_mask():
    doc = Document()
    planned = build_request(doc, Params("fruit", seed=3), regions=LAYERS)
    r = planned.request
    assert [(x.mask, x.prompt, x.negative_prompt) for x in r.regions] == [
        ("regions.0.mask", "a red apple", ""), ("regions.1.mask", "a blue pear", "green")]
    assert "off" not in doc.read  # a switched-off region is not even read
    left, right = planned.attachments["regions.0.mask"], planned.attachments["regions.1.mask"]
    assert (left.format, left.width, left.height) == ("gray", r.width, r.height) == ("gray", W, H)
    assert left.data == b"".join((b"\xff" if x < W // 2 else b"\x00") for _ in range(H) for x in range(W))
    assert right.data == b"".join((b"\x00" if x < W // 2 else b"\x80") for _ in range(H) for x in range(W))
    assert editing.check_request(planned) is None
    assert editing.fit_attachments(r, planned.attachments) == planned.attachments  # every mask is named


def test_region_layers_stay_in_the_canvas_and_masks_cover_the_selections_region():
    doc = Document(selection=(24, 8, 16, 8))
    planned = build_request(doc, Params("fruit", strength=0.7), regions=LAYERS)
    assert doc.excluded == []  # paint the painter sees: part of the picture sent
    x, y, w, h = (planned.request.x, planned.request.y, planned.image.width, planned.image.height)
    for name, layer in (("regions.0.mask", "left"), ("regions.1.mask", "right")):
        mask = planned.attachments[name]
        assert (mask.width, mask.height) == (w, h)
        assert mask.data == editing.crop_bytes(doc.layers[layer], W, 4, x, y, w, h)[3::4]


def test_a_layer_without_paint_in_the_box_is_left_out_and_the_rest_renumbered():
    doc = Document(selection=(2, 2, 4, 4))
    planned = build_request(doc, Params("fruit"), regions=[RegionLayer("empty", "nothing"), LAYERS[0]])
    assert [(x.mask, x.prompt) for x in planned.request.regions] == [("regions.0.mask", "a red apple")]
    assert set(planned.attachments) == {"regions.0.mask"}
    assert build_request(Document(), Params("fruit"), regions=[RegionLayer("empty", "x")]).request.regions is None


def test_bad_region_lists_are_plain_words_before_sending():
    with pytest.raises(RequestProblem, match=f"at most {MAX_REGIONS} region layers"):
        build_request(Document(), Params("fruit"), regions=[RegionLayer("left", "a")] * (MAX_REGIONS + 1))
    with pytest.raises(RequestProblem, match="region layer: 'prompt' must say what to paint"):
        build_request(Document(), Params("fruit"), regions=[RegionLayer("left", "  ")])


def test_stored_text_round_trips_and_damaged_entries_are_left_out():
    text = editing.regions_to_text(LAYERS)
    assert editing.regions_from_text(text) == LAYERS
    damaged = text[:-1] + ',{"layer":"x","prompt":""},{"prompt":"no layer"},{"layer":"y","prompt":3},7]'
    assert editing.regions_from_text(damaged) == LAYERS
    assert editing.regions_from_text("not json") == [] and editing.regions_from_text(None) == []


WELCOME = {"default_model": "sd", "models": [
    {"id": "sd", "features": ["negative_prompt", "regions"]},
    {"id": "flux", "features": ["negative_prompt"]},
    {"id": "old"}]}  # an older server that lists no features: no regions


@pytest.mark.parametrize("model, kept", [("sd", True), (None, True), ("flux", False), ("old", False)])
def test_fit_to_model_drops_regions_and_their_masks_for_models_without_the_feature(model, kept):
    planned = build_request(Document(), Params("fruit", model=model), regions=LAYERS)
    request = editing.fit_to_model(planned.request, WELCOME)
    assert (request.regions is not None) == kept
    assert bool(editing.fit_attachments(request, planned.attachments)) == kept
    assert regions.model_has_regions(WELCOME, model) == kept


def live_frame(doc: Document, params: Params, layers=LAYERS):
    state = editing.read_state(doc, params.strength)
    return state, regions.region_items(layers, doc.read_layer, state.box)


@pytest.mark.parametrize("selection", [None, (20, 4, 16, 12)])
def test_a_live_frame_carries_the_regions_as_generate_does(selection):
    doc, params = Document(selection), Params("fruit", strength=0.6, seed=5, steps=4)
    state, areas = live_frame(doc, params)
    live = editing.plan_live(state, params, None, regions=areas)
    generate = build_request(doc, params, regions=LAYERS)
    assert live.request.regions == generate.request.regions and live.attachments == generate.attachments


def test_region_masks_and_prompts_make_frames_due():
    doc, params = Document(), Params("fruit", seed=5, steps=4)
    session = editing.LiveSession(5, clock=lambda: 0.0)

    def observe(layers=LAYERS) -> bool:
        state, areas = live_frame(doc, params, layers)
        session.observe(*editing.frame_keys(state, params, regions=areas))
        return session.due()

    assert observe()
    session.sent("one")
    session.finished("one", True)
    assert not observe()
    doc.layers["right"] = half(False, alpha=255)  # a stroke on a region layer: new pixels sent
    assert observe()
    session.sent("two")
    session.finished("two", True)
    assert not observe()
    observe([LAYERS[0], RegionLayer("right", "a green pear")])  # a prompt: sent after a pause in typing
    assert session.pending and session.due(now=1.0)


def test_two_half_canvas_regions_run_on_a_real_server(served):
    from easel.client.connection import Client

    doc, params = Document(), Params("fruit", seed=7, steps=2)
    planned = build_request(doc, params, regions=LAYERS)
    with Client(served[0], image_format="rgba") as client:
        assert "regions" in editing.find_model(client.welcome, None)["features"]
        result = editing.generate_work(planned)(client)
        plain = client.generate(build_request(doc, params).request)
    assert [r["prompt"] for r in result.parameters["regions"]] == ["a red apple", "a blue pear"]
    assert result.images[0].image.data != plain.images[0].image.data  # the regions steer
