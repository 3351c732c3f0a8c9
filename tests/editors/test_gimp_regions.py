"""Regions in a real GIMP 3 (batch mode, in the Debian chroot of test_gimp.py): a real `easel serve` with the
tiny SD and tiny SDXL models. Use as Region… marks a left-half and a right-half layer with two prompts (the
``easel-region`` parasite, kept in XCF files); Generate (on each model) and Image from Sketch send them as the
request's ``regions`` (masks: the layers' alpha) and keep them in the picture: each result layer equals the
same request built with ``editing.build_request`` over the known pixels and sent straight to the server."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "gimp"))

from gimp_batch import check_layers, run_batch, unchanged
from gimp_chroot import ARTIFACTS
from region_cases import GOOD, MARKS, direct, region_cases

from helpers.server_harness import running_server

pytestmark = pytest.mark.editor


@pytest.fixture(scope="module")
def region_url(tiny_sd_path, tiny_sdxl_path, tmp_path_factory):
    if os.environ.get("EASEL_TEST_URL"):
        yield os.environ["EASEL_TEST_URL"]
        return
    folder = tmp_path_factory.mktemp("gimp_regions")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with running_server([tiny_sd_path, tiny_sdxl_path], "--output-dir", str(folder / "results"),
                        log_path=ARTIFACTS / "gimp_regions_server.log") as url:
        yield url


@pytest.fixture(scope="module")
def batch(root, region_url):
    yield from run_batch(root, region_url, lambda folder: region_cases(folder, region_url))


def layer_named(snapshot: dict, name: str) -> dict:
    return next(lay for lay in snapshot["layers"] if lay["name"] == name)


def test_use_as_region_marks_each_layer_and_the_marks_survive_xcf(batch):
    before = batch["generate"]["before"]  # saved as XCF and loaded back
    for name, args in MARKS.items():
        lay = layer_named(before, name)
        assert lay["region"] == {"layer": str(lay["tattoo"]), "prompt": args["prompt"],
                                 "negative_prompt": args.get("negative-prompt", ""), "enabled": True}
    assert layer_named(before, "Background")["region"] is None


@pytest.mark.parametrize("name", list(GOOD))
def test_regions_reach_the_request_and_match_the_direct_request(batch, region_url, name):
    case = batch[name]
    assert "error" not in case, case["error"]
    assert case["status"] == "success", case
    unchanged(case)
    check_layers(case["new_layers"], direct(name, region_url), GOOD[name][1]["prompt"])
    params = case["new_layers"][0]["record"]["parameters"]
    assert params["model"] == (GOOD[name][1].get("model") or "tiny-sd")
    regions = [r["prompt"] for r in params.get("regions") or []]
    assert regions == ([] if name == "generate-plain" else ["a blue pear", "a red apple"])


def test_regions_change_the_result(batch):
    assert batch["generate"]["new_layers"][0]["pixels"] != batch["generate-plain"]["new_layers"][0]["pixels"]


def test_use_as_region_needs_a_prompt_and_unmarks(batch):
    case = batch["use-no-prompt"]
    assert case["status"] == "calling-error" and "'prompt' must say what to paint" in case["message"], case
    assert case["after"] == case["before"]
    unmark = batch["unmark"]
    assert unmark["status"] == "success", unmark
    assert layer_named(unmark["after"], "Right")["region"] is None
    assert layer_named(unmark["after"], "Left")["region"] == layer_named(unmark["before"], "Left")["region"]
