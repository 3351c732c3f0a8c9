"""Regions in the Krita docker, in a real Krita's GUI (`make test-krita`: Krita 5.1.5).

A real `easel serve` with the tiny SD and tiny SDXL models. The self-test plugin runs only its "regions"
part (tests/editors/krita/easel_selftest/regions_part.py): it paints a "Left" layer on the left half and adds
it as a region with the panel's Add, makes a "Right" region with the "New Region from Selection" action over
the right half, generates on each model and saves and reopens the document as .kra. Each result layer must
equal, pixel for pixel, the same text-to-image request sent directly with the shared client, its regions'
masks built here from the region layers' own pixels (their alpha).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from easel.client import editing
from easel.client.connection import Client

sys.path.insert(0, str(Path(__file__).resolve().parent / "krita"))
from gui_run import H, W, gui_spec, krita_gui_session, recorded
from krita_host import ARTIFACTS, paste

pytestmark = pytest.mark.editor
XL = "tiny-sdxl"
LEFT, RIGHT = ("a red apple", ""), ("a blue pear", "green")
PARAMS = dict(prompt="fruit on a table", negative="blurry", strength=100, steps=4, guidance=None, seed=5, batch=1)


@pytest.fixture(scope="module")
def url(tiny_sd_path, tiny_sdxl_path, tmp_path_factory):
    from helpers.server_harness import running_server

    root = tmp_path_factory.mktemp("krita-regions-server")
    with running_server([str(tiny_sd_path), str(tiny_sdxl_path)], log_path=root / "server.log") as found:
        yield found


@pytest.fixture(scope="module")
def gui(request, url, tmp_path_factory):
    spec = {key: value for key, value in gui_spec(url).items() if key not in ("live", "power")}
    spec.update(parts=["regions"], regions={"left": LEFT, "right": RIGHT, "params": PARAMS, "xl_model": XL})
    yield from krita_gui_session(request, tmp_path_factory.getbasetemp(), spec, url,
                                 ARTIFACTS / "krita_regions_docker.png")


def part(gui, name: str) -> dict:
    return recorded(gui, "regions", name)


class Dumps:
    """``editing.Document`` over the region layers the self-test dumped (ids: left, right); text to image
    reads nothing else."""

    def __init__(self, gui):
        self.gui = gui

    def size(self):
        return W, H

    def selection_box(self):
        return None

    def layer_bounds(self, layer: str):
        return 0, 0, W, H

    def read_layer(self, layer: str, box) -> bytes:
        return editing.crop_bytes((self.gui.out / f"regions-{layer}.rgba").read_bytes(), W, 4, *box)


def direct(gui, url: str, model: str):
    """The oracle: text to image at the document's size with the two regions, their masks the layers' alpha."""
    p = PARAMS
    params = editing.Params(p["prompt"], p["negative"], 1.0, p["steps"], None, p["seed"], 1, model)
    regions = [editing.RegionLayer("left", *LEFT), editing.RegionLayer("right", *RIGHT)]
    planned = editing.build_request(Dumps(gui), params, regions=regions)
    with Client(url, image_format="rgba") as client:
        return client.generate(planned.request, attachments=planned.attachments)


def test_the_panel_adds_a_layer_and_a_new_region_from_the_selection(gui):
    added = part(gui, "added")
    assert part(gui, "shown") is True
    assert added["right_name"] == "Region: a blue pear"
    assert added["rows"] == [["Left: a red apple", True], ["Region: a blue pear: a blue pear (not: green)", True]]
    stored = editing.regions_from_text(added["annotation"])
    assert [(r.layer, r.prompt, r.negative_prompt, r.enabled) for r in stored] == [
        (added["ids"][0], *LEFT, True), (added["ids"][1], *RIGHT, True)]
    right = (gui.out / "regions-right.rgba").read_bytes()  # filled where the selection was: the right half
    alpha = right[3::4]
    assert all(alpha[y * W + x] == (255 if x >= W // 2 else 0) for y in range(H) for x in range(W))


@pytest.mark.parametrize("name, model", [("sd", None), ("xl", XL)])
def test_generate_sends_both_regions_and_equals_the_direct_request(gui, url, name, model):
    record = part(gui, name)
    assert record["done"] and record["started_busy"] and record["unchanged"], record["status"]
    assert len(record["layers"]) == 1, record["status"]
    result = direct(gui, url, record["model"])
    if model:
        assert record["model"] == model and part(gui, "xl_shown")
    assert [r["prompt"] for r in result.parameters["regions"]] == [LEFT[0], RIGHT[0]]
    image = result.images[0]
    assert record["layers"][0]["name"] == editing.layer_name(PARAMS["prompt"], image.seed)
    got, want = (gui.out / record["layers"][0]["file"]).read_bytes(), paste(image, W, H)
    assert got == want, f"{sum(a != b for a, b in zip(got, want))} bytes differ from the direct request's result"


def test_the_regions_survive_saving_and_reopening_the_kra(gui):
    record = part(gui, "reopened")
    assert record["saved"] and record["opened"]
    stored = editing.regions_from_text(record["annotation"])
    assert [(r.prompt, r.negative_prompt) for r in stored] == [LEFT, RIGHT]
    assert all(r.layer in record["layers"] for r in stored)
    assert [row[0] for row in record["rows"]] == ["Left: a red apple", "Region: a blue pear: a blue pear (not: green)"]


def test_no_traceback_in_kritas_log(gui):
    assert "Traceback" not in gui.log.read_text(errors="replace")
    assert json.dumps(gui.result)
