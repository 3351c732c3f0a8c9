"""Running GIMP batch sessions for the editor tests and judging what they recorded (tests/editors/test_gimp*.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

from editor_site import install_plugin
from gimp_cases import GOOD, direct
from gimp_chroot import ARTIFACTS, Workdir, batch_command, chroot_shell

from easel.client import editing

HERE = Path(__file__).resolve().parent.parent  # tests/editors


def run_batch(root: Path, url: str, make_cases) -> Iterator[dict]:
    """Run ``make_cases(input folder)`` in one GIMP batch session against ``url``; yields {case name: result}
    with each new layer's pixels read back, and removes the scratch folder afterwards."""
    work = Workdir(root)
    install_plugin("gimp", work.plugins())
    spec = dict(cases=make_cases(work.host / "in"), url=url,
                **{"in": work.path("in"), "out": work.path("out")})
    (work.host / "spec.json").write_text(json.dumps(spec))
    (work.host / "batch_cases.py").write_text((HERE / "gimp/batch_cases.py").read_text())
    t0 = time.monotonic()
    proc = chroot_shell(root, batch_command(work.path("batch_cases.py"), work.version),
                        {"HOME": work.path("home"), "EASEL_TEST_SPEC": work.path("spec.json")},
                        timeout=300, log=ARTIFACTS / "gimp_batch.log")
    results_file = work.host / "out/results.json"
    assert results_file.exists(), f"GIMP wrote no results (rc {proc.returncode}):\n{proc.stdout[-4000:]}"
    results = json.loads(results_file.read_text())
    print(f"GIMP batch session: {time.monotonic() - t0:.1f} s, {results['gimp']}")
    cases = {c["name"]: c for c in results["cases"]}
    for case in cases.values():
        for layer in case.get("new_layers", []) + case.get("new_image", {}).get("layers", []):
            layer["pixels"] = (work.host / "out" / layer["file"]).read_bytes()
    yield cases
    work.cleanup()


def unchanged(case: dict) -> None:
    """Nothing but the new layers changed: size, selection, precision, every old layer (pixels, properties)."""
    before, after = case["before"], case["after"]
    assert after["size"] == before["size"] and after["selection"] == before["selection"]
    assert after["precision"] == before["precision"]
    old_after = [lay for lay in after["layers"] if lay["id"] in {b["id"] for b in before["layers"]}]
    assert old_after == before["layers"]


def check_layers(got: list[dict], result, prompt: str) -> None:
    """Each result on top, in server order (the last inserted is the topmost), equal to the server's."""
    assert len(got) == len(result.images)
    for layer, want in zip(reversed(got), result.images):
        assert layer["name"] == editing.layer_name(prompt, want.seed)
        assert (layer["x"], layer["y"], layer["w"], layer["h"]) == (want.x, want.y, want.image.width,
                                                                     want.image.height)
        assert layer["pixels"] == want.image.data, f"{layer['name']}: pixels differ from the server's"
        assert layer["visible"] and layer["opacity"] == 100.0
        assert layer["record"]["seed"] == want.seed and layer["record"]["job"]


def check_success(case: dict, url: str, name: str):
    """The case succeeded, changed nothing else, and its layers equal the direct request's result."""
    assert "error" not in case, case["error"]
    assert case["status"] == "success", case
    unchanged(case)
    expected = direct(name, url)
    assert len(expected.images) == GOOD[name][1].get("batch", 1)
    check_layers(case["new_layers"], expected, GOOD[name][1]["prompt"])
    return expected
