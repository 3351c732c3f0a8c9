"""Selection modes, Expand Canvas and upscaler models in a real GIMP 3 (batch mode, the chroot of test_gimp.py)
against a real `easel serve` with the tiny SD model and a tiny random Real-ESRGAN Compact ×2 in its models folder.

Regenerate Selection in mode background with nothing selected (the server's background model a tiny ONNX one
that finds what is red) gives the direct request's layer for the whole image: clear over the square, the blue
backdrop repainted. Regenerate Selection in mode remove takes a red square off a plain background: the layer equals the direct
request's and no red is left in the flattened picture. Expand Canvas grows the image 32 px to the right: the
image grows, the old layers stay where they were, the layer equals the direct request's at its place, the old
pixels left of the blend band are untouched and the margin is painted opaque. Upscale with the upscaler model at
strength 0 opens the server's result, which differs from the Lanczos one."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "gimp"))

from gimp_batch import check_layers, run_batch, unchanged

from easel.client import editing
from easel.client.connection import Client, new_job_id
from easel.client.protocol import GenerateRequest, Image
from helpers import tiny_background
from helpers.documents import ArrayDocument
from helpers.server_harness import running_server

pytestmark = pytest.mark.editor
W, H, GROW = 96, 80, 32
PAPER, RED = (200, 180, 150, 255), (220, 30, 30, 255)
BACKDROP = (*tiny_background.BACKDROP, 255)  # blue: the tiny background model's "not the subject"
SHAPE, SEL_BOX = (38, 28, 20, 20), (30, 20, 36, 36)  # the red square, the selection around it
BACKGROUND = dict(prompt="a beach", seed=7, steps=3, strength=1.0, **{"inpaint-mode": "background"})
REMOVE = dict(prompt="", seed=5, steps=3, strength=1.0, **{"inpaint-mode": "remove"})
EXPAND = dict(prompt="a meadow", seed=6, steps=3, right=GROW)
UPSCALE = dict(prompt="", factor=2, strength=0.0, seed=1, steps=3)


def picture(paper: tuple[int, ...] = PAPER) -> np.ndarray:
    out = np.empty((H, W, 4), np.uint8)
    out[:] = paper
    x, y, w, h = SHAPE
    out[y:y + h, x:x + w] = RED
    return out


def selection() -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    x, y, w, h = SEL_BOX
    mask[y:y + h, x:x + w] = 255
    return mask


def image_spec(folder: Path, selected: bool, paper: tuple[int, ...] = PAPER) -> dict:
    name = "paper.rgba" if paper == PAPER else "backdrop.rgba"
    (folder / name).write_bytes(picture(paper).tobytes())
    spec = dict(width=W, height=H, layers=[dict(name="Background", file=name, x=0, y=0, w=W, h=H)],
                active="Background")
    if selected:
        (folder / "selection.gray").write_bytes(selection().tobytes())
        spec["selection"] = "selection.gray"
    return spec


@pytest.fixture(scope="module")
def modes_url(tiny_sd_path, redness_model, tmp_path_factory):
    from helpers.upscalers import compact, save

    root = tmp_path_factory.mktemp("gimp_modes")
    save(compact(2, seed=1), root / "models" / "upscale_models" / "two.safetensors")
    with running_server([tiny_sd_path], "--background-model", redness_model, "--models-dir", str(root / "models"),
                        "--output-dir", str(root / "out")) as url:
        yield url


def cases(folder: Path, url: str) -> list[dict]:
    plain, selected = image_spec(folder, False), image_spec(folder, True)
    return [dict(name="background", procedure="easel-regenerate-selection", image=image_spec(folder, False, BACKDROP),
                 args=dict(BACKGROUND, url=url)),
            dict(name="remove", procedure="easel-regenerate-selection", image=selected, args=dict(REMOVE, url=url)),
            dict(name="expand", procedure="easel-expand", image=plain, args=dict(EXPAND, url=url)),
            dict(name="expand-nothing", procedure="easel-expand", image=plain, args=dict(prompt="x", url=url)),
            dict(name="upscale-model", procedure="easel-upscale", image=plain,
                 args=dict(UPSCALE, upscaler="two", url=url)),
            dict(name="upscale-lanczos", procedure="easel-upscale", image=plain, args=dict(UPSCALE, url=url))]


@pytest.fixture(scope="module")
def batch(root, modes_url):  # noqa: F811 - the conftest fixture
    yield from run_batch(root, modes_url, lambda folder: cases(folder, modes_url))


def ask(url: str, request: GenerateRequest, image: Image, mask: Image | None = None):
    with Client(url, image_format="rgba", timeout=120) as client:
        return client.generate(request, image, mask)


def flatten(base: np.ndarray, layer: dict) -> np.ndarray:
    """``layer`` laid over ``base`` (straight-alpha over, rounded) at its offset."""
    out = base.astype(np.float64)
    px = np.frombuffer(layer["pixels"], np.uint8).reshape(layer["h"], layer["w"], 4).astype(np.float64)
    x, y = layer["x"], layer["y"]
    region = out[y:y + layer["h"], x:x + layer["w"], :3]
    alpha = px[..., 3:] / 255
    out[y:y + layer["h"], x:x + layer["w"], :3] = px[..., :3] * alpha + region * (1 - alpha)
    return np.rint(out).astype(np.uint8)


def test_background_without_a_selection_repaints_around_the_square(batch, modes_url, redness_model):
    from easel.server import background

    case = batch["background"]
    assert "error" not in case, case["error"]
    assert case["status"] == "success", case
    unchanged(case)
    params = editing.params_from_ui(BACKGROUND["prompt"], "", 1.0, BACKGROUND["steps"], -1.0, BACKGROUND["seed"], 1, "")
    planned = editing.build_request(ArrayDocument(picture(BACKDROP)), params, editing.Features(inpaint_mode="background"))
    expected = ask(modes_url, planned.request, planned.image, planned.mask)
    check_layers(case["new_layers"], expected, BACKGROUND["prompt"])
    assert expected.parameters["inpaint_mode"] == "background"
    layer = case["new_layers"][0]
    got = np.frombuffer(layer["pixels"], np.uint8).reshape(layer["h"], layer["w"], 4)
    matte = background.subject_matte(picture(BACKDROP), redness_model)
    subject, backdrop = matte == 255, matte == 0
    x, y, w, h = SHAPE
    assert (matte[y:y + h, x:x + w] > 200).all() and subject.sum() > w * h // 2  # the model finds the square
    assert (layer["x"], layer["y"], layer["w"], layer["h"]) == (0, 0, W, H)
    assert (got[subject, 3] == 0).all() and (got[backdrop, 3] == 255).all()  # clear over the square only
    assert backdrop.mean() > 0.8  # the model tells the square from the backdrop
    assert np.any(got[backdrop, :3] != picture(BACKDROP)[backdrop, :3], axis=-1).mean() > 0.9  # repainted


def test_remove_takes_the_shape_away(batch, modes_url):
    case = batch["remove"]
    assert "error" not in case, case["error"]
    assert case["status"] == "success", case
    unchanged(case)
    params = editing.params_from_ui("", "", 1.0, REMOVE["steps"], -1.0, REMOVE["seed"], 1, "")
    _mode, region = editing.read_plan(W, H, SEL_BOX, 1.0)
    x, y, w, h = region
    state = editing.EditorState(W, H, picture()[y:y + h, x:x + w].tobytes(), region,
                                selection()[y:y + h, x:x + w].tobytes())
    planned = editing.plan_request(state, params)
    planned.request.inpaint_mode = "remove"
    expected = ask(modes_url, planned.request, planned.image, planned.mask)
    check_layers(case["new_layers"], expected, "")
    assert expected.parameters["inpaint_mode"] == "remove"
    flat = flatten(picture(), case["new_layers"][0])
    reddish = (flat[..., 0].astype(int) - flat[..., 1]) > 100  # the paper's R - G is 20, the square's 190
    assert not reddish.any(), f"{int(reddish.sum())} red pixels left"


def test_expand_grows_the_canvas_and_places_the_layer(batch, modes_url):
    case = batch["expand"]
    assert "error" not in case, case["error"]
    assert case["status"] == "success", case
    before, after = case["before"], case["after"]
    assert after["size"] == [W + GROW, H]
    assert [lay for lay in after["layers"] if lay["id"] == before["layers"][0]["id"]] == before["layers"]
    request = GenerateRequest(job=new_job_id(), prompt=EXPAND["prompt"], seed=EXPAND["seed"],
                              steps=EXPAND["steps"], strength=1.0, x=0, y=0, canvas_width=W, canvas_height=H,
                              expand=[0, 0, GROW, 0])
    expected = ask(modes_url, request, Image.rgba(W, H, picture().tobytes()))
    check_layers(case["new_layers"], expected, EXPAND["prompt"])  # x, y: the server's, here >= 0 (nothing to the left)
    assert expected.parameters["inpaint_mode"] == "expand"
    (layer,) = case["new_layers"]
    grown = np.zeros((H, W + GROW, 4), np.uint8)
    grown[:, :W] = picture()
    flat = flatten(grown, layer)
    assert np.array_equal(flat[:, :W // 2], picture()[:, :W // 2])  # far from the margin: the old pixels
    assert not np.array_equal(flat[:, W - 8:W], picture()[:, W - 8:W])  # the blend band reaches into the old
    px = np.frombuffer(layer["pixels"], np.uint8).reshape(layer["h"], layer["w"], 4)
    assert (px[:, W - layer["x"]:, 3] == 255).all() and layer["x"] + layer["w"] == W + GROW  # the margin, opaque


def test_expand_without_a_margin_is_a_plain_words_error(batch):
    case = batch["expand-nothing"]
    assert case["status"] == "calling-error" and "needs a margin" in case["message"], case
    assert case["after"] == case["before"] and case["new_layers"] == []


def test_upscaler_model_gives_the_servers_result(batch, modes_url):
    case, lanczos = batch["upscale-model"], batch["upscale-lanczos"]
    for c in (case, lanczos):
        assert "error" not in c, c["error"]
        assert c["status"] == "success", c
        unchanged(c)
    params = editing.params_from_ui("", "", 0.0, UPSCALE["steps"], -1.0, UPSCALE["seed"], 1, "")
    planned = editing.plan_upscale(picture().tobytes(), W, H, params, 2, upscaler="two")
    expected = ask(modes_url, planned.request, planned.image)
    assert expected.parameters["upscaler"] == "two" and expected.parameters["strength"] == 0.0
    [layer] = case["new_image"]["layers"]
    assert case["new_image"]["size"] == [2 * W, 2 * H]
    assert layer["pixels"] == expected.images[0].image.data
    assert lanczos["new_image"]["layers"][0]["pixels"] != layer["pixels"]  # the model made it, not Lanczos
