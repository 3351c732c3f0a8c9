"""The Krita plugin's three uses on a FLUX.1 model, in a real Krita's GUI: `make test-krita`
(Krita 5.1.5) and `make test-krita-newest` (the sid chroot's Krita 5.3).

The self-test plugin of test_krita_gui.py (tests/editors/krita/easel_selftest/) runs only its "offered"
and "uses" parts (gui_run.flux_spec) against a real `easel serve` whose one model is the tests' tiny
FLUX.1-dev-like pipeline; the server also offers a (SD) ControlNet, so hiding it is the plugin's doing.
The docker must hide what FLUX.1 cannot use, and each layer must equal, pixel for pixel and at its
offset, what the same request gives when sent directly with the shared client. The scenarios keep a
negative prompt in the (hidden) field: FLUX.1 refuses one, so the plugin must leave it out.

The server also has a tiny FLUX Redux (``--ip-adapter``): the "reference" part adds a smaller picture as a
``style`` reference layer (Redux's pooled tokens), refines with it (sent whole, at its own size) and again with it switched off.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from easel.client import editing
from easel.client.connection import Client, new_job_id
from easel.client.protocol import Control, GenerateRequest, Image

sys.path.insert(0, str(Path(__file__).resolve().parent / "krita"))
from gui_run import H, W, checked_scenario, flux_spec, krita_gui_session, scenarios
from krita_host import ARTIFACTS

pytestmark = pytest.mark.editor
USES = {"generate": "txt2img", "refine": "img2img", "selection": "inpaint"}
REFERENCE = {"box": [30, 10, 24, 16], "kind": "style", "strength": 1.5,  # x, y, w, h on the canvas
             "params": dict(prompt="a tower at night", negative="", strength=60, steps=3, guidance=None, seed=5,
                            batch=1)}


@pytest.fixture(scope="module")
def flux_url(tiny_flux_path, tiny_sd_path, tmp_path_factory):
    """``easel serve`` with only the tiny FLUX.1 model, a ControlNet it cannot use, a tiny FLUX Redux and a
    result store."""
    from helpers.server_harness import running_server
    from helpers.tiny_models import build_tiny_controlnet
    from helpers.tiny_redux import build_tiny_redux

    root = tmp_path_factory.mktemp("krita-flux-server")
    control = build_tiny_controlnet(tiny_sd_path, root / "scribble")
    redux = build_tiny_redux(root / "FLUX.1-Redux-dev")
    with running_server([tiny_flux_path], "--control-model", control, "--ip-adapter", redux, "--output-dir",
                        str(root / "results"), log_path=root / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def gui(request, flux_url, tmp_path_factory):
    spec = flux_spec(flux_url)
    spec.update(parts=[*spec["parts"], "reference"], reference=REFERENCE)
    yield from krita_gui_session(request, tmp_path_factory.getbasetemp(), spec, flux_url,
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


def reference_directly(gui, url: str, canvas: str, on: bool):
    """The oracle: the refine request over the dumped canvas, with the reference whole at its own size."""
    p, (_, _, w, h) = REFERENCE["params"], REFERENCE["box"]
    controls, attachments = [], {}
    if on:
        attachments["controls.0.image"] = Image.rgba(w, h, (gui.out / "reference-ref.rgba").read_bytes())
        controls.append(Control(REFERENCE["kind"], "controls.0.image", REFERENCE["strength"]))
    request = GenerateRequest(job=new_job_id(), prompt=p["prompt"], steps=p["steps"], seed=p["seed"], batch=1,
                              model=gui.result["model"], canvas_width=W, canvas_height=H, strength=p["strength"] / 100,
                              x=0, y=0, controls=controls or None)
    with Client(url, image_format="rgba") as client:
        return client.generate(request, Image.rgba(W, H, (gui.out / canvas).read_bytes()), attachments=attachments)


def test_a_reference_layer_steers_flux_through_redux_and_switched_off_is_left_out(gui, flux_url):
    record = gui.result["reference"]
    assert record["added"]["rows"] == [["Ref: style 1.5", True]]
    layers = {}
    for name, on in (("on", True), ("off", False)):
        job = record[name]
        assert job["done"] and job["unchanged"] and len(job["layers"]) == 1, job["status"]
        result = reference_directly(gui, flux_url, f"reference-canvas-{name}.rgba", on)
        assert [c["kind"] for c in result.parameters.get("controls") or []] == ([REFERENCE["kind"]] if on else [])
        layers[name] = (gui.out / job["layers"][0]["file"]).read_bytes()
        want = result.images[0]
        assert (want.x, want.y, want.image.width, want.image.height) == (0, 0, W, H)
        assert layers[name] == want.image.data, f"{name}: the layer differs from the direct request's result"
    steered = reference_directly(gui, flux_url, "reference-canvas-off.rgba", True)
    assert steered.images[0].image.data != layers["off"]  # the reference steers when it is on
