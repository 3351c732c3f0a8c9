"""The docker's selection mode, Expand and upscaler model in a real Krita's GUI (`make test-krita`).

A real `easel serve` with the tiny SD model and a tiny random Real-ESRGAN Compact ×2 in its models folder. The
self-test plugin runs only its "modes" part (tests/editors/krita/easel_selftest/modes_part.py) on its painted
document (a red box on a plain background): Background with nothing selected (the server's background model a
tiny ONNX one that finds what is red) says so in the status, gives the direct request's layer and keeps the box's
pixels; the mode picker at Remove with a selection around the box takes it
away (the layer equals the direct request's, no red left in the picture); Expand with 32 px on the right grows
the document, keeps the old layers and the old pixels left of the blend band, and the layer equals the direct
request's at its place; Upscale ×2 with the upscaler model equals the server's result (the slider's lowest
strength, 1 %)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from easel.client import editing
from easel.client.connection import Client, new_job_id
from easel.client.protocol import GenerateRequest, Image
from helpers.documents import ArrayDocument

sys.path.insert(0, str(Path(__file__).resolve().parent / "krita"))
from gui_run import H, W, gui_spec, krita_gui_session, recorded, ui_params
from krita_host import ARTIFACTS, paste

pytestmark = pytest.mark.editor
GROW = 32
COMMON = dict(negative="", steps=3, guidance=None, batch=1)
MODES = {"background": dict(COMMON, prompt="a beach", strength=100, seed=7),
         "remove": dict(COMMON, prompt="", strength=100, seed=5), "selection": [14, 8, 52, 42],
         "expand": dict(COMMON, prompt="a meadow", strength=100, seed=6), "right": GROW,
         "upscale": dict(COMMON, prompt="", strength=1, seed=1), "upscaler": "two"}


@pytest.fixture(scope="module")
def url(tiny_sd_path, redness_model, tmp_path_factory):
    from helpers.server_harness import running_server
    from helpers.upscalers import compact, save

    root = tmp_path_factory.mktemp("krita-modes-server")
    save(compact(2, seed=1), root / "models" / "upscale_models" / "two.safetensors")
    with running_server([str(tiny_sd_path)], "--background-model", redness_model, "--models-dir", str(root / "models"), "--output-dir",
                        str(root / "results"), log_path=root / "server.log") as found:
        yield found


@pytest.fixture(scope="module")
def gui(request, url, tmp_path_factory):
    spec = {key: value for key, value in gui_spec(url).items() if key not in ("live", "power")}
    spec.update(parts=["modes"], modes=MODES)
    yield from krita_gui_session(request, tmp_path_factory.getbasetemp(), spec, url, ARTIFACTS / "krita_modes_docker.png")


def dump(gui, name: str, w: int = W, h: int = H, channels: int = 4) -> np.ndarray:
    data = (gui.out / f"modes-{name}").read_bytes()
    return np.frombuffer(data, np.uint8).reshape(h, w, channels) if channels > 1 else np.frombuffer(data, np.uint8)


def ask(gui, planned_request: GenerateRequest, image: Image, mask: Image | None = None):
    with Client(gui.url, image_format="rgba", timeout=120) as client:
        return client.generate(planned_request, image, mask)


def reddish(rgba: np.ndarray) -> np.ndarray:  # the background's R - G is -30, the box's 180
    return rgba[..., 0].astype(int) - rgba[..., 1] > 100


def test_background_without_a_selection_keeps_the_box_and_repaints_the_rest(gui, redness_model):
    from easel.server import background

    record = recorded(gui, "modes", "background")
    assert recorded(gui, "modes", "background_picked") == "background"
    assert recorded(gui, "modes", "background_unselected")
    assert recorded(gui, "modes", "background_words").startswith("Replacing the background")
    assert record["done"] and record["started_busy"] and record["unchanged"], record["status"]
    assert len(record["layers"]) == 1, record["status"]
    canvas = dump(gui, "background-canvas.rgba")
    params = ui_params(MODES["background"], gui.result["model"])
    planned = editing.build_request(ArrayDocument(canvas), params, editing.Features(inpaint_mode="background"))
    result = ask(gui, planned.request, planned.image, planned.mask)
    assert result.parameters["inpaint_mode"] == "background"
    (image,) = result.images
    assert record["layers"][0]["name"] == editing.layer_name(MODES["background"]["prompt"], image.seed)
    layer = (gui.out / record["layers"][0]["file"]).read_bytes()
    assert layer == paste(image, W, H), "differs from the server's"
    got, matte = np.frombuffer(layer, np.uint8).reshape(H, W, 4), background.subject_matte(canvas, redness_model)
    subject, backdrop = matte == 255, matte == 0
    assert subject[reddish(canvas)].mean() > 0.9  # the model found the box
    assert (got[subject, 3] == 0).all()  # the layer is clear over the subject: the sketch's own pixels show
    assert (got[backdrop, 3] == 255).all()  # and covers the background
    assert np.any(got[backdrop, :3] != canvas[backdrop, :3], axis=-1).mean() > 0.9  # with new paint


def test_remove_takes_the_box_away(gui):
    record = recorded(gui, "modes", "remove")
    assert recorded(gui, "modes", "mode_picked") == "remove"
    assert record["done"] and record["started_busy"] and record["unchanged"], record["status"]
    assert len(record["layers"]) == 1, record["status"]
    canvas, mask = dump(gui, "remove-canvas.rgba").tobytes(), (gui.out / "modes-remove-mask.gray").read_bytes()
    params = ui_params(MODES["remove"], gui.result["model"])
    _mode, region = editing.read_plan(W, H, editing.selection_bounds(mask, W, H), params.strength)
    state = editing.EditorState(W, H, editing.crop_bytes(canvas, W, 4, *region), region,
                                editing.crop_bytes(mask, W, 1, *region))
    planned = editing.apply_features(editing.plan_request(state, params), editing.Features(inpaint_mode="remove"))
    result = ask(gui, planned.request, planned.image, planned.mask)
    assert result.parameters["inpaint_mode"] == "remove"
    (image,) = result.images
    assert record["layers"][0]["name"] == editing.layer_name("", image.seed)
    assert (gui.out / record["layers"][0]["file"]).read_bytes() == paste(image, W, H), "differs from the server's"
    assert reddish(dump(gui, "remove-canvas.rgba")).sum() == 40 * 30  # the box, before
    left = reddish(dump(gui, "remove-projection.rgba"))
    assert not left.any(), f"{int(left.sum())} red pixels left"


def test_expand_grows_the_document_and_places_the_layer(gui):
    record = recorded(gui, "modes", "expand")
    assert record["done"] and record["started_busy"], record["status"]
    assert record["size"] == [W + GROW, H] and all(record["old_unchanged"].values()), record
    assert len(record["layers"]) == 1, record["status"]
    canvas = dump(gui, "expand-canvas.rgba")
    sc = MODES["expand"]
    request = GenerateRequest(job=new_job_id(), prompt=sc["prompt"], seed=sc["seed"], steps=sc["steps"], strength=1.0,
                              x=0, y=0, model=gui.result["model"], canvas_width=W, canvas_height=H,
                              expand=[0, 0, GROW, 0])
    result = ask(gui, request, Image.rgba(W, H, canvas.tobytes()))
    assert result.parameters["inpaint_mode"] == "expand"
    (image,) = result.images
    image.x, image.y = editing.grown_canvas(W, H, [0, 0, GROW, 0]).place(image.x, image.y)
    assert record["layers"][0]["name"] == editing.layer_name(sc["prompt"], image.seed)
    got = (gui.out / record["layers"][0]["file"]).read_bytes()
    assert got == paste(image, W + GROW, H), "the layer differs from the server's result at its place"
    flat = dump(gui, "expand-projection.rgba", W + GROW, H)
    assert np.array_equal(flat[:, :W // 2], canvas[:, :W // 2])  # far from the margin: the old pixels
    assert (flat[:, W:, 3] == 255).all()  # the margin painted, opaque


def test_upscale_with_the_upscaler_model_equals_the_servers_result(gui):
    record = recorded(gui, "modes", "upscale")
    assert recorded(gui, "modes", "upscaler_picked") == MODES["upscaler"]
    assert record["done"] and record["new_documents"] == 1, record["status"]
    GW = W + GROW  # the expanded document
    assert record["size"] == [2 * GW, 2 * H]
    params = ui_params(MODES["upscale"], gui.result["model"])
    planned = editing.plan_upscale(dump(gui, "upscale-canvas.rgba", GW, H).tobytes(), GW, H, params, 2,
                                   upscaler=MODES["upscaler"])
    result = ask(gui, planned.request, planned.image)
    assert result.parameters["upscaler"] == MODES["upscaler"]
    assert (gui.out / "modes-upscale-doc.rgba").read_bytes() == result.images[0].image.data


def test_no_traceback_in_kritas_log(gui):
    assert "Traceback" not in gui.log.read_text(errors="replace")
