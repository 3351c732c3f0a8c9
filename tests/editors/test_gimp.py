"""The GIMP 3 plug-in in a real GIMP 3 (Debian trixie chroot from .ci/install_gimp.sh).

One batch-mode GIMP session runs every NONINTERACTIVE case (tests/editors/gimp/batch_cases.py)
against a real Easel server on 127.0.0.1; each test below judges one case from the files that
script wrote. The strong check: the same request, sent straight to the same server with the
shared client and the same seed, must give exactly the pixels and offsets the plug-in inserted.
A GUI run under Xvfb screenshots the dialog (artifacts/gimp_dialog.png), presses OK and checks
the interactive run inserted its layer.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "gimp"))
sys.path.insert(0, str(HERE.parent))

from gimp_chroot import (  # noqa: E402
    REPO,
    Workdir,
    batch_command,
    chroot_shell,
    free_display,
    require_chroot,
    start_chroot_shell,
    xwd_to_png,
)

from server import editing  # noqa: E402
from server.client import Client  # noqa: E402
from server.plugin_install import install_plugin  # noqa: E402

pytestmark = pytest.mark.editor
ARTIFACTS = REPO / "artifacts"
W, H = 96, 80
SEL_BOX = (20, 16, 48, 40)
PROCS = {"generate": "easel-generate", "sketch": "easel-image-from-sketch", "selection": "easel-regenerate-selection"}


# ----------------------------------------------------------------------------- test image
def _layers() -> list[dict]:
    """Bottom to top: an opaque gradient background, an opaque patterned 'ink' layer at an
    offset, and a hidden magenta layer that must not reach the composite."""
    yy, xx = np.mgrid[0:H, 0:W]
    bg = np.dstack([xx * 255 // (W - 1), yy * 255 // (H - 1), np.full((H, W), 180), np.full((H, W), 255)])
    iy, ix = np.mgrid[0:24, 0:40]
    ink = np.dstack([np.full((24, 40), 20), (ix * 6) % 256, np.where((ix // 4 + iy // 4) % 2, 200, 60),
                     np.full((24, 40), 255)])
    hidden = np.dstack([np.full((H, W), 255), np.zeros((H, W)), np.full((H, W), 255), np.full((H, W), 255)])
    return [dict(name="Background", x=0, y=0, px=bg), dict(name="Ink", x=30, y=20, px=ink),
            dict(name="Hidden", x=0, y=0, px=hidden, visible=False)]


def _composite() -> np.ndarray:
    """What GIMP shows: opaque visible layers pasted in order (no blending needed)."""
    out = np.zeros((H, W, 4), np.uint8)
    for lay in _layers():
        if lay.get("visible", True):
            h, w = lay["px"].shape[:2]
            out[lay["y"]:lay["y"] + h, lay["x"]:lay["x"] + w] = lay["px"]
    return out


def _selection() -> np.ndarray:
    """A soft selection: 60 at the box edge rising by 16 per pixel inwards to 255, 0 outside."""
    x, y, w, h = SEL_BOX
    yy, xx = np.mgrid[0:h, 0:w]
    depth = np.minimum(np.minimum(xx, w - 1 - xx), np.minimum(yy, h - 1 - yy))
    mask = np.zeros((H, W), np.uint8)
    mask[y:y + h, x:x + w] = np.minimum(255, 60 + 16 * depth)
    return mask


def _image_spec(work: Workdir, selection: bool) -> dict:
    layers = []
    for lay in _layers():
        name = f"{lay['name']}.rgba"
        (work.host / "in" / name).write_bytes(lay["px"].astype(np.uint8).tobytes())
        h, w = lay["px"].shape[:2]
        layers.append(dict(name=lay["name"], file=name, x=lay["x"], y=lay["y"], w=w, h=h,
                           visible=lay.get("visible", True)))
    spec = dict(width=W, height=H, layers=layers, active="Ink")
    if selection:
        (work.host / "in/selection.gray").write_bytes(_selection().tobytes())
        spec["selection"] = "selection.gray"
    return spec


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# the successful cases: procedure kind -> arguments (plus steps and url)
GOOD = {"generate": dict(prompt="a red circle", seed=1234, batch=2),
        "sketch": dict(prompt="a blue square", strength=0.5, seed=99),
        "selection": dict(prompt="a green triangle", strength=1.0, seed=7)}


def _args(kind: str, url: str) -> dict:
    return dict(GOOD[kind], steps=3, url=url)


def _cases(work: Workdir, url: str) -> list[dict]:
    args = dict(steps=3, url=url)
    plain, selected = _image_spec(work, False), _image_spec(work, True)
    return [
        *(dict(name=kind, procedure=PROCS[kind], image=selected if kind == "selection" else plain,
               args=_args(kind, url)) for kind in GOOD),
        dict(name="sketch-16bit", procedure=PROCS["sketch"], image=dict(plain, precision="U16_LINEAR"),
             args=_args("sketch", url)),
        dict(name="server-down", procedure=PROCS["generate"], image=plain,
             args=dict(prompt="x", url=f"ws://127.0.0.1:{_free_port()}")),
        dict(name="bad-model", procedure=PROCS["sketch"], image=plain,
             args=dict(args, prompt="x", model="no-such-model")),
        dict(name="no-selection", procedure=PROCS["selection"], image=plain, args=dict(args, prompt="x")),
        dict(name="no-image", procedure=PROCS["generate"], image=None, args=dict(args, prompt="x")),
    ]


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def root():
    return require_chroot()


@pytest.fixture(scope="module")
def server_url(request):
    """A real `easel serve` subprocess on 127.0.0.1 with the tiny SD test model (EASEL_TEST_MODEL
    names another model; EASEL_TEST_URL points at a server you started yourself)."""
    if os.environ.get("EASEL_TEST_URL"):
        yield os.environ["EASEL_TEST_URL"]
        return
    from server_harness import running_server

    model = os.environ.get("EASEL_TEST_MODEL") or request.getfixturevalue("tiny_sd_path")
    ARTIFACTS.mkdir(exist_ok=True)
    with running_server([model], log_path=ARTIFACTS / "gimp_server.log") as url:
        yield url


@pytest.fixture(scope="module")
def batch(root, server_url):
    """One GIMP batch session running every case; yields {case name: recorded result}."""
    work = Workdir(root)
    install_plugin("gimp", work.plugins())
    spec = dict(cases=_cases(work, server_url), url=server_url, **{"in": work.path("in"), "out": work.path("out")})
    (work.host / "spec.json").write_text(json.dumps(spec))
    (work.host / "batch_cases.py").write_text((HERE / "gimp/batch_cases.py").read_text())
    t0 = time.monotonic()
    proc = chroot_shell(root, batch_command(work.path("batch_cases.py")),
                        {"HOME": work.path("home"), "EASEL_TEST_SPEC": work.path("spec.json")},
                        timeout=300, log=ARTIFACTS / "gimp_batch.log")
    results_file = work.host / "out/results.json"
    assert results_file.exists(), f"GIMP wrote no results (rc {proc.returncode}):\n{proc.stdout[-4000:]}"
    results = json.loads(results_file.read_text())
    print(f"GIMP batch session: {time.monotonic() - t0:.1f} s, {results['gimp']}")
    cases = {c["name"]: c for c in results["cases"]}
    for case in cases.values():
        for layer in case.get("new_layers", []):
            layer["pixels"] = (work.host / "out" / layer["file"]).read_bytes()
    yield cases
    work.cleanup()


# ----------------------------------------------------------------------------- helpers
def _direct(url: str, kind: str, args: dict) -> list:
    """Ask the server straight through the shared client what the plug-in should have asked."""
    params = editing.params_from_ui(args["prompt"], "", args.get("strength", 1.0) if kind != "generate" else 1.0,
                                    args["steps"], -1.0, args["seed"], args.get("batch", 1), "")
    state = editing.EditorState(W, H)
    if kind != "generate":
        box = SEL_BOX if kind == "selection" else None
        mode, region = editing.read_plan(W, H, box, params.strength)
        x, y, w, h = region
        state.region, state.rgba = region, _composite()[y:y + h, x:x + w].tobytes()
        if mode == editing.INPAINT:
            state.selection = _selection()[y:y + h, x:x + w].tobytes()
    planned = editing.plan_request(state, params)
    with Client(url, image_format="rgba", timeout=60) as client:
        return client.generate(planned.request, planned.image, planned.mask).images


def _check_success(case: dict, url: str, kind: str, args: dict) -> None:
    assert "error" not in case, case["error"]
    assert case["status"] == "success", case
    before, after = case["before"], case["after"]
    # nothing else changed: same size, selection, and every old layer identical (pixels and properties)
    assert after["size"] == before["size"] and after["selection"] == before["selection"]
    assert after["precision"] == before["precision"]
    old_after = [lay for lay in after["layers"] if lay["id"] in {b["id"] for b in before["layers"]}]
    assert old_after == before["layers"]
    expected = _direct(url, kind, args)
    got = case["new_layers"]
    assert len(got) == len(expected) == args.get("batch", 1)
    # each result on top, in server order (the last inserted is the topmost)
    for layer, want in zip(reversed(got), expected):
        assert layer["name"] == editing.layer_name(args["prompt"], want.seed)
        assert (layer["x"], layer["y"], layer["w"], layer["h"]) == (want.x, want.y, want.image.width,
                                                                     want.image.height)
        assert layer["pixels"] == want.image.data, f"{layer['name']}: pixels differ from the server's"
        assert layer["visible"] and layer["opacity"] == 100.0


# ----------------------------------------------------------------------------- batch tests
def test_generate_inserts_server_result_layers(batch, server_url):
    case = batch["generate"]
    _check_success(case, server_url, "generate", _args("generate", server_url))
    assert all((lay["x"], lay["y"]) == (0, 0) for lay in case["new_layers"])


def test_image_from_sketch_sends_visible_composite(batch, server_url):
    _check_success(batch["sketch"], server_url, "sketch", _args("sketch", server_url))


def test_high_bit_depth_image_is_converted_both_ways(batch, server_url):
    """A 16-bit linear image: Gegl converts to 8-bit sRGB for the server and back for the layer."""
    case = batch["sketch-16bit"]
    assert case["before"]["precision"] == case["after"]["precision"] == "u16-linear"
    _check_success(case, server_url, "sketch", _args("sketch", server_url))


def test_regenerate_selection_sends_soft_mask(batch, server_url):
    case = batch["selection"]
    _check_success(case, server_url, "selection", _args("selection", server_url))
    layer = case["new_layers"][0]
    x, y, w, h = SEL_BOX  # the result covers the selection
    assert layer["x"] <= x and layer["y"] <= y
    assert layer["x"] + layer["w"] >= x + w and layer["y"] + layer["h"] >= y + h


@pytest.mark.parametrize("name, status, words", [
    ("server-down", "execution-error", "cannot reach the Easel server"),
    ("bad-model", "execution-error", "model"),
    ("no-selection", "calling-error", "needs a selection"),
    ("no-image", "calling-error", "no image is open"),
])
def test_errors_are_clear_and_change_nothing(batch, name, status, words):
    case = batch[name]
    assert "error" not in case, case["error"]
    assert case["status"] == status, case
    assert words in case.get("message", ""), case
    assert case["message"].startswith("Easel: ")
    if "before" in case:
        assert case["after"] == case["before"] and case["new_layers"] == []


# ----------------------------------------------------------------------------- GUI test
GUI_ARGS = dict(prompt="a red circle on a hill", seed=42, steps=3)
SLOW_ARGS = dict(prompt="a long job to cancel", seed=5, steps=150, strength=1.0)  # ~8 s on the tiny model
IGNORED_ARGS = dict(prompt="not used: the dialog shows the last values", seed=9, steps=3)


def _until(predicate, timeout: float, step: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return None


def _geometry(xwininfo: str) -> tuple[int, int, int, int]:
    """(x, y, width, height) of a window from ``xwininfo -id`` output."""
    values = {}
    for line in xwininfo.splitlines():
        key, _, value = line.strip().partition(":")
        values[key] = value.strip()
    return (int(values["Absolute upper-left X"]), int(values["Absolute upper-left Y"]), int(values["Width"]),
            int(values["Height"]))


def test_gui_dialog_screenshot_interactive_run_and_cancel(root, server_url):
    """GIMP's GUI on Xvfb (inside the chroot). Run 0: the Generate dialog appears, is captured, OK
    runs the job and its layer arrives. Run 1 (Image from Sketch): OK starts a long job, the dialog
    shows the server's steps, Escape cancels it and nothing is added. Run 2: Generate again; its
    dialog comes back with run 0's values, which OK then uses."""
    work = Workdir(root)
    install_plugin("gimp", work.plugins())
    (work.host / "fb").mkdir()
    runs = [dict(procedure=PROCS["generate"], args=dict(GUI_ARGS, url=server_url)),
            dict(procedure=PROCS["sketch"], args=dict(SLOW_ARGS, url=server_url)),
            dict(procedure=PROCS["generate"], args=dict(IGNORED_ARGS, url=server_url))]
    (work.host / "spec.json").write_text(json.dumps(dict(runs=runs, out=work.path("out"))))
    (work.host / "gui_dialog.py").write_text((HERE / "gimp/gui_dialog.py").read_text())
    display = f":{free_display()}"
    env = {"HOME": work.path("home"), "EASEL_TEST_SPEC": work.path("spec.json"), "DISPLAY": display}
    gimp = start_chroot_shell(root, (
        f"Xvfb {display} -screen 0 1280x800x24 -nolisten tcp -noreset -fbdir {work.path('fb')} & X=$!; "
        "for i in $(seq 50); do xwininfo -root >/dev/null 2>&1 && break; sleep 0.2; done; "
        "timeout 240 gimp-3.0 --no-splash --batch-interpreter=python-fu-eval "
        f"-b \"exec(open('{work.path('gui_dialog.py')}').read())\"; kill $X"), env, ARTIFACTS / "gimp_gui.log")

    def x11(cmd: str) -> str:
        return chroot_shell(root, cmd, {"DISPLAY": display}, timeout=30).stdout

    def dialog(words: str = "Easel: Generate") -> tuple[str, str] | None:
        """(window id, title line) of the Easel dialog whose title contains ``words``."""
        for line in x11("xwininfo -root -tree").splitlines():
            if '"Easel: ' in line and words in line:
                return line.split()[0], line
        return None

    def capture(window: str, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        xwd_to_png(work.host / "fb/Xvfb_screen0", ARTIFACTS / "gimp_screen.png", ARTIFACTS / name,
                   _geometry(x11(f"xwininfo -id {window}")))

    def result(i: int) -> dict:
        path = work.host / f"out/gui_result{i}.json"
        assert _until(path.exists, 120), f"interactive run {i} did not finish; see {ARTIFACTS / 'gimp_gui.log'}"
        time.sleep(0.3)
        return json.loads(path.read_text())

    try:
        found = _until(dialog, 120)
        assert found, f"the Easel dialog never appeared; see {ARTIFACTS / 'gimp_gui.log'}"
        time.sleep(2)  # let GTK finish drawing
        capture(found[0], "gimp_dialog.png")
        x11(f"xdotool windowfocus --sync {found[0]} key --clearmodifiers Return")
        first = result(0)
        assert "error" not in first, first["error"]
        assert first["status"] == "success", first
        names = [lay["name"] for lay in first["layers"]]
        assert names == [editing.layer_name(GUI_ARGS["prompt"], GUI_ARGS["seed"]), "Sketch"]
        assert first["layers"][0]["x"] == first["layers"][0]["y"] == 0

        found = _until(lambda: dialog("Easel: Image from Sketch…\""), 60)
        assert found, "the Image from Sketch dialog never appeared"
        time.sleep(1)
        x11(f"xdotool windowfocus --sync {found[0]} key --clearmodifiers Return")
        running = _until(lambda: dialog("step "), 60, step=0.2)
        assert running, "the dialog never showed the server's steps"
        capture(running[0], "gimp_progress.png")
        x11(f"xdotool windowfocus --sync {running[0]} key --clearmodifiers Escape")
        second = result(1)
        assert "error" not in second, second["error"]
        assert second["status"] == "cancel", second
        assert [lay["name"] for lay in second["layers"]] == names  # nothing added

        found = _until(lambda: dialog("Easel: Generate…\""), 60)
        assert found, "the third dialog never appeared"
        time.sleep(1)
        x11(f"xdotool windowfocus --sync {found[0]} key --clearmodifiers Return")
        third = result(2)
        assert third.get("status") == "success", third
        assert third["layers"][0]["name"].startswith(names[0])  # run 0's prompt and seed, remembered
        assert len(third["layers"]) == 3
        assert gimp.wait(timeout=60) == 0
    finally:
        if gimp.poll() is None:
            os.killpg(gimp.pid, 15)
            gimp.wait(timeout=20)
        work.cleanup()
