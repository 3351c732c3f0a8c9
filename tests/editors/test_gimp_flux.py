"""The GIMP plug-in's three uses on a FLUX.1 model: a real GIMP batch session against a real
`easel serve` holding only a tiny random-weight FLUX.1-dev-like model built by the tests. Each layer must
equal the direct request's result (the same request sent with the shared client), as for SD."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "gimp"))

from gimp_batch import check_success, run_batch
from gimp_cases import batch_cases

from helpers.server_harness import running_server

pytestmark = pytest.mark.editor
THREE_USES = ("generate", "sketch", "selection")


@pytest.fixture(scope="module")
def flux_url(tiny_flux_path, tmp_path_factory):
    with running_server([tiny_flux_path], "--output-dir", str(tmp_path_factory.mktemp("flux_results"))) as url:
        yield url


@pytest.fixture(scope="module")
def flux_batch(root, flux_url):  # noqa: F811 - the imported fixture
    yield from run_batch(root, flux_url, lambda folder: [case for case in batch_cases(folder, flux_url)
                                                         if case["name"] in THREE_USES])


@pytest.mark.parametrize("name", THREE_USES)
def test_three_uses_on_flux(flux_batch, flux_url, name):
    result = check_success(flux_batch[name], flux_url, name)
    assert "flux" in result.parameters["model"]
