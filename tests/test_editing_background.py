"""The ``background`` selection mode from the editors without a selection: ``build_request`` sends the whole canvas
with an all-white mask (no selection, an empty one, or a command that leaves the selection alone), so the server
replaces the background of the whole picture; with a selection and in the other modes nothing changes; through a
real in-process server (the tiny SD model and the tiny rembg model) the subject's pixels come back unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from easel.client.editing import (
    BACKGROUND,
    IMG2IMG,
    INPAINT,
    SELECTION_MODES,
    TXT2IMG,
    Features,
    Params,
    build_request,
    generate_work,
    selection_mode_help,
)
from easel.client.protocol import INPAINT_MODES
from easel.client.send_region import send_region
from helpers.documents import ArrayDocument
from helpers.pictures import texture
from helpers.tiny_background import subject_picture

torch.set_num_threads(1)  # 2 shared cores
W, H = 48, 40
PICTURE = texture(W, H, seed=3)
SELECTION = (20, 12, 10, 8)
WHOLE = (0, 0, W, H)


def background(doc: ArrayDocument, strength: float = 1.0, use_selection: bool = True):
    return build_request(doc, Params("a beach", strength=strength, seed=1), Features(inpaint_mode=BACKGROUND),
                         use_selection=use_selection)


def test_background_is_a_protocol_mode():
    assert BACKGROUND in INPAINT_MODES


def test_the_editors_list_every_selection_mode_once_with_help():
    """Both plugins build their mode list and its help from SELECTION_MODES: no mode may be missing."""
    assert sorted(SELECTION_MODES) == sorted(INPAINT_MODES)
    assert list(SELECTION_MODES)[0] == "auto"
    help_text = selection_mode_help()
    for mode, words in SELECTION_MODES.items():
        assert f"{mode.capitalize()} ({words})" in help_text


@pytest.mark.parametrize("box, strength, use_selection", [
    (None, 1.0, True),  # Generate at 100 %: was text to image
    (None, 0.4, True),  # below 100 %: was image to image
    (SELECTION, 1.0, False),  # a command that leaves the selection alone (GIMP's Generate)
])
def test_without_a_selection_the_whole_canvas_is_sent_with_a_full_mask(box, strength, use_selection):
    doc = ArrayDocument(PICTURE, box)
    planned = background(doc, strength, use_selection)
    assert planned.mode == INPAINT
    assert (planned.request.x, planned.request.y) == (0, 0)
    assert (planned.image.width, planned.image.height) == (W, H) and planned.image.data == PICTURE.tobytes()
    assert (planned.mask.width, planned.mask.height) == (W, H) and planned.mask.data == b"\xff" * (W * H)
    assert planned.request.inpaint_mode == BACKGROUND and planned.request.strength == strength
    assert doc.reads == [("canvas", WHOLE)]  # the selection is not read


def test_an_empty_selection_is_no_selection():
    doc = ArrayDocument(PICTURE, SELECTION)
    doc.mask[:] = 0  # bounds, but nothing selected inside them (e.g. a fully feathered selection)
    planned = background(doc)
    assert planned.mode == INPAINT and planned.mask.data == b"\xff" * (W * H)
    assert planned.image.data == PICTURE.tobytes()


def test_with_a_selection_its_context_region_and_mask_are_sent_as_before():
    doc = ArrayDocument(PICTURE, SELECTION)
    planned = background(doc)
    x, y, w, h = send_region(SELECTION, (W, H))
    assert (planned.request.x, planned.request.y, planned.image.width, planned.image.height) == (x, y, w, h)
    assert planned.mask.data == doc.mask[y : y + h, x : x + w].tobytes()
    assert planned.image.data == PICTURE[y : y + h, x : x + w].tobytes()


@pytest.mark.parametrize("mode", [m for m in INPAINT_MODES if m != BACKGROUND])
def test_other_modes_without_a_selection_are_unchanged(mode):
    new = build_request(ArrayDocument(PICTURE), Params("a beach", seed=1), Features(inpaint_mode=mode))
    assert new.mode == TXT2IMG and new.image is None and new.mask is None
    refine = build_request(ArrayDocument(PICTURE), Params("a beach", strength=0.4, seed=1), Features(inpaint_mode=mode))
    assert refine.mode == IMG2IMG and refine.image.data == PICTURE.tobytes() and refine.mask is None


def test_through_a_real_server_the_subject_comes_back_unchanged(background_engine, redness_model):
    from easel.client.connection import Client
    from easel.server import background as rembg
    from easel.server.imaging.compose import LayerResult, flatten
    from helpers.pictures import pixels
    from helpers.server_harness import inprocess_server

    picture = subject_picture()  # a red disc (the subject) on blue
    planned = build_request(ArrayDocument(picture), Params("a field", steps=2, seed=5), Features(inpaint_mode=BACKGROUND))
    with inprocess_server(background_engine) as (url, _), Client(url, image_format="rgba") as client:
        result = generate_work(planned)(client)
    image = result.images[0]
    assert (image.x, image.y, image.image.width, image.image.height) == (0, 0, 64, 64)
    out = flatten(picture, LayerResult(pixels(image.image), image.x, image.y))
    matte = rembg.subject_matte(picture, redness_model)
    subject, backdrop = matte == 255, matte == 0
    assert subject.sum() > 300 and np.array_equal(out[subject], picture[subject])  # bit-exact
    assert np.any(out[backdrop] != picture[backdrop], axis=-1).mean() > 0.9  # the whole background is new
    assert result.parameters["inpaint_mode"] == BACKGROUND and result.parameters["strength"] == 1.0
