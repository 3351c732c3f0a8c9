"""GIMP's Filters > Easel > Edit with Instruction… (``easel-edit``) on FLUX.1 Kontext: a real GIMP batch session
against a real `easel serve` holding the tests' tiny random Kontext (the default) and tiny FLUX.1-dev.

With a selection only the selection is edited (its surroundings as context); without one the whole picture
is; each layer equals the same request sent directly with the shared client (built from the known image by
the shared helpers, at the command's strength, which the edit model leaves unused). Naming a model that is
not an edit model is a plain-words error that changes nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "gimp"))

from gimp_batch import check_layers, run_batch, unchanged
from gimp_cases import SEL_BOX, H, W, composite, image_spec, selection

from easel.client import editing
from easel.client.connection import Client
from helpers.server_harness import running_server

pytestmark = pytest.mark.editor
EDIT = dict(prompt="make it night", seed=7, steps=3)
EDIT_STRENGTH = 0.5  # easel-edit's strength (plugin_gimp: below 1, so the picture is sent)


@pytest.fixture(scope="module")
def kontext_url(tiny_flux_path, tmp_path_factory):
    from helpers.tiny_kontext import build_tiny_kontext

    root = tmp_path_factory.mktemp("kontext")
    kontext = build_tiny_kontext(root / "tiny-flux-kontext")
    with running_server([kontext, tiny_flux_path], "--output-dir", str(root / "out")) as url:
        yield url


def cases(folder: Path, url: str) -> list[dict]:
    plain, selected = image_spec(folder, False), image_spec(folder, True)
    args = dict(EDIT, url=url)
    return [dict(name="edit-selection", procedure="easel-edit", image=selected, args=args),
            dict(name="edit-whole", procedure="easel-edit", image=plain, args=args),
            dict(name="edit-not-edit-model", procedure="easel-edit", image=selected,
                 args=dict(args, model="tiny-flux-dev"))]


@pytest.fixture(scope="module")
def batch(root, kontext_url):  # noqa: F811 - the conftest fixture
    yield from run_batch(root, kontext_url, lambda folder: cases(folder, kontext_url))


def direct(url: str, selected: bool):
    """The edit the plug-in should have sent, built here from the known image and selection."""
    params = editing.params_from_ui(EDIT["prompt"], "", EDIT_STRENGTH, EDIT["steps"], -1.0, EDIT["seed"], 1, "")
    mode, region = editing.read_plan(W, H, SEL_BOX if selected else None, params.strength)
    x, y, w, h = region
    state = editing.EditorState(W, H, composite()[y:y + h, x:x + w].tobytes(), region)
    if mode == editing.INPAINT:
        state.selection = selection()[y:y + h, x:x + w].tobytes()
    planned = editing.plan_request(state, params)
    with Client(url, image_format="rgba", timeout=60) as client:
        return client.generate(planned.request, planned.image, planned.mask)


@pytest.mark.parametrize("name", ["edit-selection", "edit-whole"])
def test_edit_with_instruction_equals_the_direct_request(batch, kontext_url, name):
    case = batch[name]
    assert "error" not in case, case["error"]
    assert case["status"] == "success", case
    unchanged(case)
    expected = direct(kontext_url, selected=name == "edit-selection")
    check_layers(case["new_layers"], expected, EDIT["prompt"])
    p = expected.parameters
    assert "kontext" in p["model"] and p["strength"] == 1.0  # an edit: the strength unused
    (layer,) = case["new_layers"]
    if name == "edit-selection":  # only the selection (and its feathered edge) comes back
        assert p["mode"] == "inpaint" and p["inpaint_mode"] == "refine"
        sx, sy, sw, sh = SEL_BOX
        assert layer["x"] <= sx and layer["y"] <= sy and layer["w"] * layer["h"] < W * H
        assert layer["x"] + layer["w"] >= sx + sw and layer["y"] + layer["h"] >= sy + sh
    else:
        assert p["mode"] == "img2img" and (layer["x"], layer["y"], layer["w"], layer["h"]) == (0, 0, W, H)


def test_edit_needs_an_edit_model(batch):
    case = batch["edit-not-edit-model"]
    assert "error" not in case, case["error"]
    assert case["status"] == "execution-error", case
    assert "needs an edit model" in case["message"] and "tiny-flux-kontext" in case["message"], case
    assert case["after"] == case["before"] and case["new_layers"] == []
