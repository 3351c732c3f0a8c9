"""The Krita docker's Edit mode on FLUX.1 Kontext, in a real Krita's GUI: `make test-krita`.

The self-test plugin of test_krita_gui.py runs only its "uses" part (two scenarios of its own) against a real
`easel serve` whose one model is the tests' tiny random Kontext. The chosen model is an edit model (its welcome
features list ``edit``), so the Generate button reads "Edit" and, at 100 % strength, sends the canvas to edit
(without a selection) or the selection with its context; each layer equals, pixel for pixel and at its offset,
the same request sent directly with the shared client (the edit model leaves the strength unused)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "krita"))
from gui_run import H, W, ask_server_directly, flux_spec, krita_gui_session, scenario
from krita_host import ARTIFACTS, paste

from easel.client import editing

pytestmark = pytest.mark.editor
COMMON = dict(prompt="make it night", negative="", steps=3, guidance=None, strength=100, batch=1, button=True)
SCENARIOS = [dict(COMMON, name="edit-canvas", seed=5),
             dict(COMMON, name="edit-selection", seed=99, selection=[58, 22, 30, 26], feather=3)]
MODES = {"edit-canvas": "img2img", "edit-selection": "inpaint"}
SENT_STRENGTH = 50  # the plugin's strength for an edit (below 1, so the canvas is sent)


@pytest.fixture(scope="module")
def kontext_url(tmp_path_factory):
    from helpers.server_harness import running_server
    from helpers.tiny_kontext import build_tiny_kontext

    root = tmp_path_factory.mktemp("krita-kontext-server")
    kontext = build_tiny_kontext(root / "tiny-flux-kontext")
    with running_server([kontext], "--output-dir", str(root / "results"), log_path=root / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def gui(request, kontext_url, tmp_path_factory):
    spec = dict(flux_spec(kontext_url), parts=["uses"], scenarios=SCENARIOS)
    yield from krita_gui_session(request, tmp_path_factory.getbasetemp(), spec, kontext_url,
                                 ARTIFACTS / "krita_kontext_docker.png")


@pytest.mark.parametrize("name", list(MODES))
def test_edit_mode_layers_equal_the_direct_request(gui, name):
    record = scenario(gui, name)
    spec = next(s for s in SCENARIOS if s["name"] == name)
    assert record["button"] == "Edit"
    assert record["done"] and record["started_busy"], record["status"]
    assert len(record["new_layers"]) == 1 and all(record["unchanged"].values()), record["status"]
    canvas = (gui.out / f"{name}-canvas.rgba").read_bytes()
    mask = (gui.out / f"{name}-mask.gray").read_bytes()
    mode, result = ask_server_directly(gui, dict(spec, strength=SENT_STRENGTH), canvas, mask, W, H)
    assert mode == MODES[name]
    p = result.parameters
    assert p["model"] == gui.result["model"] and "kontext" in p["model"] and p["strength"] == 1.0
    (layer,), (image,) = record["new_layers"], result.images
    assert layer["name"] == editing.layer_name(spec["prompt"], image.seed) and image.seed == spec["seed"]
    assert (gui.out / layer["file"]).read_bytes() == paste(image, W, H), f"{name}: differs from the server's result"
    if name == "edit-selection":  # a region around the selection, not the canvas
        assert image.image.width * image.image.height < W * H and p["inpaint_mode"] == "refine"
    else:
        assert (image.x, image.y, image.image.width, image.image.height) == (0, 0, W, H)
