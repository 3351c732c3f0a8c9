"""The Krita plugin's three uses on a FLUX.1 model, in a real Krita's GUI: `make test-krita`
(Krita 5.1.5) and `make test-krita-newest` (the sid chroot's Krita 5.3).

The self-test plugin of test_krita_gui.py (tests/editors/krita/easel_selftest/) runs only its "offered"
and "uses" parts (gui_run.flux_spec) against a real `easel serve` whose one model is the tests' tiny
FLUX.1-dev-like pipeline; the server also offers a (SD) ControlNet, so hiding it is the plugin's doing.
The docker must hide what FLUX.1 cannot use, and each layer must equal, pixel for pixel and at its
offset, what the same request gives when sent directly with the shared client. The scenarios keep a
negative prompt in the (hidden) field: FLUX.1 refuses one, so the plugin must leave it out.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from easel.client import editing
from easel.client.connection import Client

sys.path.insert(0, str(Path(__file__).resolve().parent / "krita"))
from gui_run import H, W, checked_scenario, flux_spec, krita_gui_session, scenarios
from krita_host import ARTIFACTS

pytestmark = pytest.mark.editor
USES = {"generate": "txt2img", "refine": "img2img", "selection": "inpaint"}


@pytest.fixture(scope="module")
def flux_url(tiny_flux_path, tiny_sd_path, tmp_path_factory):
    """``easel serve`` with only the tiny FLUX.1 model, a ControlNet it cannot use, and a result store."""
    from helpers.server_harness import running_server
    from helpers.tiny_models import build_tiny_controlnet

    root = tmp_path_factory.mktemp("krita-flux-server")
    control = build_tiny_controlnet(tiny_sd_path, root / "scribble")
    with running_server([tiny_flux_path], "--control-model", control, "--output-dir", str(root / "results"),
                        log_path=root / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def gui(request, flux_url, tmp_path_factory):
    yield from krita_gui_session(request, tmp_path_factory.getbasetemp(), flux_spec(flux_url), flux_url,
                                 ARTIFACTS / "krita_flux_docker.png")


@pytest.fixture(scope="module")
def welcome(flux_url) -> dict:
    with Client(flux_url) as client:
        return client.welcome


def test_flux_is_the_model_chosen(gui, welcome):
    r = gui.result
    assert r.get("docker_found") and r["connection"].startswith("connected"), r.get("connection")
    assert [(m["id"], m["family"]) for m in welcome["models"]] == [(r["model"], "flux")]
    assert r["models"] == [r["model"]]


def test_flux_docker_hides_what_the_model_cannot_use(gui, welcome):
    offered = gui.result["offered"]
    assert welcome["control_models"] == ["scribble"] and not welcome["refiner"]  # the server has a ControlNet…
    assert offered["panel"] and not offered["control_shown"] and offered["control_models"] == []  # …not for Flux
    assert not offered["negative_shown"] and not offered["refiner_shown"]
    assert offered["variation_shown"]  # what FLUX.1 supports stays


@pytest.mark.parametrize("name", USES)
def test_flux_use_layers_equal_the_direct_request(gui, name):
    record, result = checked_scenario(gui, W, H, name, USES[name])
    spec = next(s for s in scenarios() if s["name"] == name)
    assert record["negative"] == spec["negative"] != ""  # the hidden field kept its text…
    p = result.parameters
    assert p["model"] == gui.result["model"] and "flux" in p["model"]
    assert p["negative_prompt"] == "" and p["mode"] == USES[name]  # …and the plugin left it out
    for layer, image in zip(record["new_layers"], result.images, strict=True):
        x, y, w, h = layer["bounds"]
        rect = (image.x, image.y, image.image.width, image.image.height)
        if name == "selection":  # a region around the selection; the layer is what is painted in it
            sx, sy, sw, sh = spec["selection"]
            assert rect[0] <= x <= sx and rect[1] <= y <= sy and rect[2] * rect[3] < W * H
            assert sx + sw <= x + w <= rect[0] + rect[2] and sy + sh <= y + h <= rect[1] + rect[3]
        else:
            assert rect == (0, 0, W, H) and layer["bounds"] == [0, 0, W, H]


def test_flux_server_ran_the_plugins_jobs_on_flux(gui, flux_url):
    """The server's own record of the plugin's three jobs (the oldest stored; the direct ones came later)."""
    with Client(flux_url) as client:
        jobs = editing.fetch_history(client, limit=50)
    plugin_jobs = [job["parameters"] for job in reversed(jobs)][:len(USES)]
    assert [p["mode"] for p in plugin_jobs] == list(USES.values())
    assert all(p["model"] == gui.result["model"] and p["negative_prompt"] == "" for p in plugin_jobs)
