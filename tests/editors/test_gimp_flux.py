"""The GIMP plug-in's three uses on a FLUX.1 model: a real GIMP batch session against a real
`easel serve` holding only a tiny random-weight FLUX.1-dev-like model built by the tests. Each layer must
equal the direct request's result (the same request sent with the shared client), as for SD.

With a tiny FLUX Redux served too (``--ip-adapter``), a hidden picture marked as a ``style`` reference layer steers
Generate (sent whole, at its own size); unmarked, the next Generate equals one without it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "gimp"))

from control_cases import REF, ArrayDoc, image_spec
from gimp_batch import check_layers, check_success, run_batch, unchanged
from gimp_cases import batch_cases

from easel.client import editing
from easel.client.connection import Client
from helpers.server_harness import running_server

pytestmark = pytest.mark.editor
THREE_USES = ("generate", "sketch", "selection")


@pytest.fixture(scope="module")
def flux_url(tiny_flux_path, tmp_path_factory):
    from helpers.tiny_redux import build_tiny_redux

    root = tmp_path_factory.mktemp("flux_results")
    redux = build_tiny_redux(root / "FLUX.1-Redux-dev")
    with running_server([tiny_flux_path], "--ip-adapter", redux, "--output-dir", str(root / "out")) as url:
        yield url


@pytest.fixture(scope="module")
def flux_batch(root, flux_url):  # noqa: F811 - the imported fixture
    yield from run_batch(root, flux_url, lambda folder: [case for case in batch_cases(folder, flux_url)
                                                         if case["name"] in THREE_USES] + ref_cases(folder))


REF_MARK = dict(kind="style", strength=1.5)
GENERATE = dict(prompt="a red circle", seed=21, steps=3)


def ref_cases(folder: Path) -> list[dict]:
    """Generate over an image with a hidden picture marked as a reference layer, and with it unmarked."""
    mark = dict(layer=REF["name"], procedure="easel-control-layer", args=REF_MARK)
    unmark = dict(layer=REF["name"], procedure="easel-control-layer", args=dict(kind=REF_MARK["kind"], enabled=False))
    image = image_spec(folder, reference=True)
    return [dict(name="ref-flux", procedure="easel-generate", image=image, marks=[mark], args=GENERATE),
            dict(name="ref-flux-off", procedure="easel-generate", image=image, marks=[mark, unmark], args=GENERATE)]


def ref_directly(url: str, marked: bool):
    """The reference cases' request, built by ``editing.build_request`` and sent straight to the server."""
    params = editing.params_from_ui(GENERATE["prompt"], "", 1.0, GENERATE["steps"], -1.0, GENERATE["seed"], 1, "")
    features = editing.features_from_ui("", -1, 0.0, "", 1.0, False)
    controls = [editing.controls.settings(REF["name"], **REF_MARK)] if marked else []
    planned = editing.build_request(ArrayDoc(reference=True), params, features, use_selection=False, controls=controls)
    with Client(url, image_format="rgba", timeout=60) as client:
        return client.generate(planned.request, planned.image, planned.mask, attachments=planned.attachments)


@pytest.mark.parametrize("name", THREE_USES)
def test_three_uses_on_flux(flux_batch, flux_url, name):
    result = check_success(flux_batch[name], flux_url, name)
    assert "flux" in result.parameters["model"]


def test_a_reference_layer_steers_flux_through_redux_and_unmarked_it_is_left_out(flux_batch, flux_url):
    results = {}
    for name, marked in (("ref-flux", True), ("ref-flux-off", False)):
        case = flux_batch[name]
        assert "error" not in case, case["error"]
        assert case["status"] == "success", case
        unchanged(case)
        expected = ref_directly(flux_url, marked)
        check_layers(case["new_layers"], expected, GENERATE["prompt"])
        kinds = [c["kind"] for c in expected.parameters.get("controls") or []]
        assert kinds == ([REF_MARK["kind"]] if marked else [])
        results[name] = case["new_layers"][0]["pixels"]
    assert results["ref-flux"] != results["ref-flux-off"]  # the reference steers; the next job is without it
