"""Selection modes and expand in the plugins' shared logic (``easel.client.editing``): the mode and the margins
as ``Features`` (from widgets, on the wire only when set), the expand job ``build_request`` sends (the whole
canvas, no selection, controls or regions), and where a grown canvas puts the old picture and the result layer.
The plugins' real-editor tests are tests/editors/test_krita_modes.py and test_gimp_modes.py."""

from __future__ import annotations

import pytest

from easel.client import editing
from easel.client.editing import Features, Params, build_request, features_from_ui, grown_canvas
from easel.client.protocol import GenerateRequest


class Picture:
    """A ``width`` x ``height`` RGBA document whose pixel i is (i % 251, 0, 0, 255), a selection box; records reads."""

    def __init__(self, width: int, height: int, box=None):
        self.width, self.height, self.box = width, height, box
        self.rgba = b"".join(bytes((i % 251, 0, 0, 255)) for i in range(width * height))
        self.reads: list[tuple] = []

    def size(self):
        return self.width, self.height

    def selection_box(self):
        return self.box

    def read_canvas(self, box, exclude=()):
        self.reads.append(("canvas", tuple(box), tuple(exclude)))
        return editing.crop_bytes(self.rgba, self.width, 4, *box)

    def read_layer(self, layer, box):
        self.reads.append(("layer", layer))
        return bytes(4 * box[2] * box[3])

    def layer_bounds(self, layer):
        return 0, 0, self.width, self.height

    def read_selection(self, box):
        self.reads.append(("selection", tuple(box)))
        return bytes([255]) * (box[2] * box[3])


def wire(planned) -> dict:
    return GenerateRequest.from_message(planned.request.to_message()).to_message()


def test_the_mode_goes_on_the_wire_only_when_it_is_not_auto():
    assert features_from_ui().inpaint_mode == features_from_ui(inpaint_mode="Auto").inpaint_mode == "auto"
    doc = Picture(64, 48, box=(8, 8, 16, 16))
    plain = build_request(doc, Params("p"), features_from_ui())
    assert "inpaint_mode" not in plain.request.to_message() and "expand" not in plain.request.to_message()
    removing = build_request(doc, Params("p"), features_from_ui(inpaint_mode="remove"))
    assert wire(removing)["inpaint_mode"] == "remove" and removing.mask is not None


@pytest.mark.parametrize("kwargs, field", [(dict(inpaint_mode="erase"), "'inpaint_mode' must be one of auto"),
                                           (dict(expand=(0, 0, 5000, 0)), "'expand' must be four whole numbers")])
def test_a_bad_mode_or_margin_is_a_plain_words_error_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        features_from_ui(**kwargs)


def test_an_expand_job_sends_the_whole_canvas_without_selection_controls_or_regions():
    doc = Picture(64, 48, box=(8, 8, 16, 16))
    controls = [editing.ControlLayer("lines", "lineart")]
    regions = [editing.RegionLayer("sky", "blue sky")]
    features = features_from_ui(control_model="scribble", expand=(0, 0, 32, 0))
    assert features_from_ui(expand=(0, 0, 0, 0)).expand is None  # four zeros: no expand
    planned = build_request(doc, Params("p", strength=1.0), features, controls=controls, regions=regions)
    assert doc.reads == [("canvas", (0, 0, 64, 48), ("lines",))]  # the control layer stays out of the picture
    assert planned.mask is None and planned.image.data == doc.rgba and (planned.image.width, planned.image.height) == (64, 48)
    sent = wire(planned)
    assert sent["expand"] == [0, 0, 32, 0] and (sent.get("x", 0), sent.get("y", 0)) == (0, 0)
    assert sent.get("strength", 1.0) == 1.0  # as the painter set it: expand runs at 1 anyway
    assert not {"controls", "regions", "control_model"} & set(sent) and planned.control is None and not planned.attachments
    assert planned.request.inpaint_mode == Features.inpaint_mode


@pytest.mark.parametrize("expand, size, origin, layer_at", [
    ((0, 0, 32, 0), (96, 48), (0, 0), (-8, -4)),  # to the right: the old picture stays at the origin
    ((8, 4, 2, 1), (74, 53), (8, 4), (0, 0)),  # the result layer covers the grown picture from (-8, -4)
    (None, (64, 48), (0, 0), (-8, -4))])  # nothing grows: offsets unchanged
def test_a_grown_canvas_places_the_old_picture_and_the_result_layer(expand, size, origin, layer_at):
    growth = grown_canvas(64, 48, expand)
    assert (growth.width, growth.height) == size and (growth.dx, growth.dy) == origin
    assert growth.place(-8, -4) == layer_at
