"""Control layers in a real GIMP 3 (batch mode, in the Debian chroot of test_gimp.py): a real `easel serve`
with the tiny SD model and two tiny ControlNets of two kinds (line art, depth), and the tiny SDXL model with a
tiny ControlNet Union that serves both kinds. Use as Control Layer marks
the layers (the ``easel-control`` parasite, kept in XCF files); Generate and Image from Sketch send them as
the request's ``controls`` and leave them out of the picture: each result layer equals the same request
built with ``editing.build_request`` over the known pixels and sent straight to the server. Make Control
Layer adds the server's canny guide of what the image shows as a new, marked layer, and its line-art and
depth guides from tiny annotator and depth models in the server's models folder. A hidden picture marked as a
style reference (tiny IP-Adapters and image encoder served with --ip-adapter) steers Image from Sketch on SD 1.5
and SDXL, sent whole at its own size, and unmarked it leaves the job as without it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "gimp"))

import control_cases as cases
from control_cases import GOOD, MADE, MARKS, REFS, control_cases, direct, guide_directly
from gimp_batch import check_layers, run_batch, unchanged
from gimp_cases import SEL_BOX, H, W
from gimp_chroot import ARTIFACTS

from helpers.server_harness import running_server

pytestmark = pytest.mark.editor
LINEART, DEPTH, UNION = "control_v11p_sd15_lineart", "control_v11f1p_sd15_depth", "controlnet-union-sdxl-tiny"


@pytest.fixture(scope="module")
def control_url(tiny_sd_path, tiny_sdxl_path, tmp_path_factory):
    """A real server with the tiny SD model and a line-art and a depth ControlNet (kinds from their names), and
    the tiny SDXL model with a ControlNet Union."""
    if os.environ.get("EASEL_TEST_URL"):
        yield os.environ["EASEL_TEST_URL"]
        return
    from helpers.preprocess_models import save_random_annotators, save_tiny_depth_anything
    from helpers.tiny_ip_adapter import build_tiny_ip_adapter_repo
    from helpers.tiny_models import build_tiny_controlnet, build_tiny_controlnet_union

    folder = tmp_path_factory.mktemp("gimp_controls")
    nets = [build_tiny_controlnet(tiny_sd_path, folder / LINEART, seed=1),
            build_tiny_controlnet(tiny_sd_path, folder / DEPTH, seed=2),
            build_tiny_controlnet_union(tiny_sdxl_path, folder / UNION, seed=3)]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    named = [arg for net in nets for arg in ("--control-model", net)]
    named += ["--ip-adapter", build_tiny_ip_adapter_repo(folder / "IP-Adapter", tiny_sd_path, tiny_sdxl_path)]
    save_random_annotators(folder / "models" / "annotators" / "Annotators")
    save_tiny_depth_anything(folder / "models" / "annotators" / "Depth-Anything-V2-Small-hf")
    with running_server([tiny_sd_path, tiny_sdxl_path], *named, "--output-dir", str(folder / "results"),
                        "--models-dir", str(folder / "models"),
                        log_path=ARTIFACTS / "gimp_controls_server.log") as url:
        yield url


@pytest.fixture(scope="module")
def batch(root, control_url):  # noqa: F811 - the imported fixture
    yield from run_batch(root, control_url, lambda folder: control_cases(folder, control_url))


def layer_named(snapshot: dict, name: str) -> dict:
    return next(lay for lay in snapshot["layers"] if lay["name"] == name)


def succeeded(case: dict) -> None:
    assert "error" not in case, case["error"]
    assert case["status"] == "success", case
    unchanged(case)


def test_use_as_control_layer_marks_each_layer(batch):
    """The marks are the ControlLayer JSON naming the layer's own tattoo; they survive an XCF round trip."""
    for name in ("generate", "sketch"):  # "sketch" was saved as XCF and loaded back
        before = batch[name]["before"]
        for layer, args in MARKS.items():
            lay = layer_named(before, layer)
            assert lay["control"] == dict(args, layer=str(lay["tattoo"]), enabled=True), (name, layer)
        assert layer_named(before, "Background")["control"] is None


@pytest.mark.parametrize("name", list(GOOD))
def test_control_layers_steer_and_stay_out_of_the_picture(batch, control_url, name):
    """The result equals the direct request's: the same control images and settings, and a canvas
    without the control layers (the depth layer covers the whole image)."""
    case = batch[name]
    succeeded(case)
    expected = direct(name, control_url)
    check_layers(case["new_layers"], expected, GOOD[name][1]["prompt"])
    params = case["new_layers"][0]["record"]["parameters"]
    assert params["model"] == (GOOD[name][1].get("model") or "tiny-sd")
    controls = params.get("controls") or []
    if GOOD[name][1].get("control-layers", True):
        assert [(c["kind"], c["strength"]) for c in controls] == [("lineart", 0.8), ("depth", 0.6)]
    else:
        assert not controls


def test_control_layers_change_the_result(batch):
    guided, unguided = batch["sketch"]["new_layers"][0], batch["sketch-unguided"]["new_layers"][0]
    assert guided["pixels"] != unguided["pixels"]
    assert batch["sketch-xl"]["new_layers"][0]["pixels"] != guided["pixels"]  # another model painted it


@pytest.mark.parametrize("name, box, strength", [("make-canny", (0, 0, W, H), 0.7),
                                                 ("make-canny-selection", SEL_BOX, 1.0)])
def test_make_control_layer_adds_the_servers_guide(batch, control_url, name, box, strength):
    """A new top layer over the image (or the selection's bounds) equal to the server's canny of what the
    image shows without its control layers, marked as a canny control layer and returned."""
    case = batch[name]
    succeeded(case)
    [layer] = case["new_layers"]
    want = guide_directly(control_url, box)
    assert (layer["x"], layer["y"], layer["w"], layer["h"]) == box
    assert layer["pixels"] == want.data
    assert layer["name"] == "Easel guide: canny"  # editing.controls.guide_name, as in Krita
    assert layer["control"] == dict(layer=str(layer["tattoo"]), kind="canny", strength=strength, start=0.0, end=1.0,
                                    enabled=True)
    assert case["returned_tattoo"] == layer["tattoo"]


@pytest.mark.parametrize("kind", MADE)
def test_make_control_layer_runs_the_servers_models(batch, control_url, kind):
    """Line art and depth guides from the server's models, as new marked layers over the whole image."""
    case = batch[f"make-{kind}"]
    succeeded(case)
    [layer] = case["new_layers"]
    want = guide_directly(control_url, kind=kind)
    assert (layer["x"], layer["y"], layer["w"], layer["h"]) == (0, 0, W, H)
    assert layer["pixels"] == want.data and len(set(want.data)) > 2
    assert layer["name"] == f"Easel guide: {kind}" and layer["control"]["kind"] == kind


@pytest.mark.parametrize("name", list(REFS))
def test_a_style_reference_is_sent_whole_and_left_out_when_unmarked(batch, control_url, name):
    """The result equals the direct request's: the reference whole at its own size (its Start/End stored as
    0-1), beside the line art and depth over the image; unmarked, the job without it."""
    case, (args, on) = batch[name], REFS[name]
    succeeded(case)
    ref = layer_named(case["before"], "Ref")
    assert ref["control"] == (dict(cases.REF_MARK, start=0.0, end=1.0, layer=str(ref["tattoo"]), enabled=True) if on else None)
    planned = cases.planned_directly(name)
    if on:
        attached = planned.attachments["controls.2.image"]
        assert (attached.width, attached.height) == (cases.REF["w"], cases.REF["h"])
    check_layers(case["new_layers"], direct(name, control_url), args["prompt"])
    params = case["new_layers"][0]["record"]["parameters"]
    assert params["model"] == args.get("model", "tiny-sd")
    assert [c["kind"] for c in params["controls"]] == ["lineart", "depth", *(["style"] if on else [])]


def test_the_reference_steers(batch):
    guided, off = batch["ref-sketch"]["new_layers"][0], batch["ref-off"]["new_layers"][0]
    assert guided["pixels"] != off["pixels"]
    assert off["pixels"] == batch["sketch"]["new_layers"][0]["pixels"]  # the hidden, unmarked layer changes nothing


def test_unmarking_makes_an_ordinary_layer(batch):
    case = batch["unmark"]
    assert case["status"] == "success", case
    assert layer_named(case["after"], "Depth")["control"] is None
    assert layer_named(case["after"], "Lines")["control"] == layer_named(case["before"], "Lines")["control"]


@pytest.mark.parametrize("name, words", [("use-no-layer", "needs a layer"),
                                         ("use-bad-range", "'end' must be at least 'start'")])
def test_use_as_control_layer_errors(batch, name, words):
    case = batch[name]
    assert "error" not in case, case["error"]
    assert case["status"] == "calling-error" and words in case["message"], case
    assert case["after"] == case["before"] and case["new_layers"] == []
