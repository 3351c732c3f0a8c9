"""The GIMP 3 plug-in in a real GIMP 3, in a Debian chroot: the oldest supported (GIMP 3.0.4, trixie,
.ci/install_gimp.sh; `make test-gimp`) or the newest Debian ships (sid, .ci/install_sid_editors.sh;
`make test-gimp-newest`, which sets EASEL_GIMP_ROOT).

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
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "gimp"))
sys.path.insert(0, str(HERE.parent))

from editor_site import install_plugin  # noqa: E402
from gimp_batch import check_layers, check_success, run_batch, unchanged  # noqa: E402
from gimp_cases import PROCS, SEL_BOX, H, W, batch_cases, direct, geometry  # noqa: E402
from gimp_chroot import (  # noqa: E402
    ARTIFACTS,
    Workdir,
    chroot_shell,
    free_display,
    start_chroot_shell,
    xwd_to_png,
)

from easel.client import editing  # noqa: E402
from helpers.probes import wait_until  # noqa: E402

pytestmark = pytest.mark.editor


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def server_url(request, tmp_path_factory):
    """A real `easel serve` subprocess on 127.0.0.1 with the tiny SD test model, a tiny LoRA
    (``ink.safetensors``), a tiny ControlNet (``scribble``) and its own result store
    (EASEL_TEST_MODEL names another model; EASEL_TEST_URL points at a server you started yourself)."""
    if os.environ.get("EASEL_TEST_URL"):
        yield os.environ["EASEL_TEST_URL"]
        return
    from helpers.server_harness import running_server
    from helpers.tiny_models import build_tiny_controlnet, write_tiny_lora

    tiny = request.getfixturevalue("tiny_sd_path")
    root = tmp_path_factory.mktemp("gimp_server")
    write_tiny_lora(tiny, root / "loras" / "ink.safetensors", seed=1, text_encoder=True)
    control = build_tiny_controlnet(tiny, root / "scribble")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with running_server([os.environ.get("EASEL_TEST_MODEL") or tiny], "--loras-dir", str(root / "loras"),
                        "--control-model", control, "--output-dir", str(root / "results"),
                        log_path=ARTIFACTS / "gimp_server.log") as url:
        yield url


@pytest.fixture(scope="module")
def batch(root, server_url):
    """One GIMP batch session running every case; yields {case name: recorded result}."""
    yield from run_batch(root, server_url, lambda folder: batch_cases(folder, server_url))


# ----------------------------------------------------------------------------- batch tests
def test_generate_inserts_server_result_layers(batch, server_url):
    case = batch["generate"]
    check_success(case, server_url, "generate")
    assert all((lay["x"], lay["y"]) == (0, 0) for lay in case["new_layers"])


def test_image_from_sketch_sends_visible_composite(batch, server_url):
    check_success(batch["sketch"], server_url, "sketch")


def test_high_bit_depth_image_is_converted_both_ways(batch, server_url):
    """A 16-bit linear image: Gegl converts to 8-bit sRGB for the server and back for the layer."""
    case = batch["sketch-16bit"]
    assert case["before"]["precision"] == case["after"]["precision"] == "u16-linear"
    check_success(case, server_url, "sketch")


def test_regenerate_selection_sends_soft_mask(batch, server_url):
    case = batch["selection"]
    check_success(case, server_url, "selection")
    layer = case["new_layers"][0]
    x, y, w, h = SEL_BOX  # the result covers the selection
    assert layer["x"] <= x and layer["y"] <= y
    assert layer["x"] + layer["w"] >= x + w and layer["y"] + layer["h"] >= y + h


def test_lora_and_variation_reach_the_server(batch, server_url):
    """``loras`` "ink:0.7" (completed to ink.safetensors) and a variation seed: the layer equals the
    direct request's, differs from the plain result, and its parasite shows the parameters used."""
    case = batch["features"]
    check_success(case, server_url, "features")
    params = case["new_layers"][0]["record"]["parameters"]
    assert params["loras"] == [{"name": "ink.safetensors", "weight": 0.7}]
    assert (params["variation_seed"], params["variation_strength"]) == (5, 0.4)
    plain = batch["generate"]["new_layers"][-1]  # same prompt and seed, no features
    assert plain["record"]["seed"] == case["new_layers"][0]["record"]["seed"]
    assert plain["pixels"] != case["new_layers"][0]["pixels"]


def test_second_pass_and_exact_size_arguments_reach_the_server(batch, server_url):
    """``hires`` off, ``hires-strength`` 0.3 and ``exact-size``: the model ran at the image's own size."""
    case = batch["sizes"]
    check_success(case, server_url, "sizes")
    params = case["new_layers"][0]["record"]["parameters"]
    assert params["exact_size"] is True and params["work_size"] == [W, H] and "second_pass" not in params
    assert (params["hires"], params["hires_strength"]) == ("off", 0.3)


def test_sketch_guide_sends_the_visible_image_as_control(batch, server_url):
    """Regenerate Selection with a control model: the guide is the visible image over the same
    region, inverted to white-on-black; the layer equals the direct request's and differs from
    the unguided one."""
    case = batch["control"]
    check_success(case, server_url, "control")
    params = case["new_layers"][0]["record"]["parameters"]
    assert (params["control_model"], params["control_strength"]) == ("scribble", 0.9)
    unguided = batch["selection"]["new_layers"][0]
    assert unguided["pixels"] != case["new_layers"][0]["pixels"]


def test_upscale_opens_a_new_image_equal_to_the_server_result(batch, server_url):
    case = batch["upscale"]
    assert "error" not in case, case["error"]
    assert case["status"] == "success", case
    assert case["after"] == case["before"] and case["new_layers"] == []  # the source image is untouched
    new = case["new_image"]
    assert new["size"] == [2 * W, 2 * H] and new["precision"] == case["before"]["precision"]
    expected = direct("upscale", server_url)
    check_layers(new["layers"], expected, "crisp")
    params = new["layers"][0]["record"]["parameters"]
    assert (params["mode"], params["upscale"], params["strength"]) == ("upscale", 2, 0.3)


def test_history_inserts_the_newest_stored_result(batch):
    """``easel-history`` with no job id fetches the newest stored result (the control case's) and
    adds its layer at its offset: the same job, the same pixels."""
    case, source = batch["history"], batch["control"]["new_layers"][0]
    assert "error" not in case, case["error"]
    assert case["status"] == "success", case
    unchanged(case)
    [layer] = case["new_layers"]
    assert layer["record"]["job"] == source["record"]["job"]
    for key in ("name", "x", "y", "w", "h", "pixels"):
        assert layer[key] == source[key], key


@pytest.mark.parametrize("name, status, words", [
    ("server-down", "execution-error", "cannot reach the Easel server"),
    ("bad-model", "execution-error", "model"),
    ("no-selection", "calling-error", "needs a selection"),
    ("no-image", "calling-error", "no image is open"),
    ("bad-lora", "execution-error", "unknown LoRA 'nope'; this server offers: ink.safetensors"),
    ("bad-lora-text", "calling-error", "the weight a number"),
    ("no-refiner", "execution-error", "no refiner is configured"),
    ("bad-factor", "calling-error", "'upscale' must be 2 or 4"),
    ("history-unknown", "execution-error", "no finished result for job 'no-such-job'"),
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
GUI_ARGS = dict(prompt="a red circle on a hill", seed=42, steps=3, loras="ink.safetensors:0.5")
SLOW_ARGS = dict(prompt="a long job to cancel", seed=5, steps=150, strength=1.0)  # ~8 s on the tiny model
IGNORED_ARGS = dict(prompt="not used: the dialog shows the last values", seed=9, steps=3)
UPSCALE_ARGS = dict(prompt="", factor=2, strength=0.3, seed=3, steps=3)


def test_gui_dialog_screenshot_interactive_run_and_cancel(root, server_url):
    """GIMP's GUI on Xvfb (inside the chroot). Run 0: the Generate dialog appears (its power
    features open, since a LoRA is set), is captured, OK runs the job and its layer arrives, made
    with the LoRA. Run 1 (Image from Sketch): OK starts a long job, the dialog shows the server's
    steps, Escape cancels it and nothing is added. Run 2: Generate again; its dialog comes back
    with run 0's values, which OK then uses. Run 3: History lists the server's results, newest
    first; Return inserts the newest (run 2's). Run 4: Upscale opens the result as a new image."""
    work = Workdir(root)
    install_plugin("gimp", work.plugins())
    (work.host / "fb").mkdir()
    runs = [dict(procedure=PROCS["generate"], args=dict(GUI_ARGS, url=server_url)),
            dict(procedure=PROCS["sketch"], args=dict(SLOW_ARGS, url=server_url)),
            dict(procedure=PROCS["generate"], args=dict(IGNORED_ARGS, url=server_url)),
            dict(procedure=PROCS["history"], args=dict(url=server_url)),
            dict(procedure=PROCS["upscale"], args=dict(UPSCALE_ARGS, url=server_url))]
    (work.host / "spec.json").write_text(json.dumps(dict(runs=runs, out=work.path("out"))))
    (work.host / "gui_dialog.py").write_text((HERE / "gimp/gui_dialog.py").read_text())
    display = f":{free_display()}"
    env = {"HOME": work.path("home"), "EASEL_TEST_SPEC": work.path("spec.json"), "DISPLAY": display}
    gimp = start_chroot_shell(root, (
        f"Xvfb {display} -screen 0 1280x800x24 -nolisten tcp -noreset -fbdir {work.path('fb')} & X=$!; "
        "for i in $(seq 50); do xwininfo -root >/dev/null 2>&1 && break; sleep 0.2; done; "
        f"timeout 240 gimp-{work.version} --no-splash --batch-interpreter=python-fu-eval "
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
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        xwd_to_png(work.host / "fb/Xvfb_screen0", ARTIFACTS / "gimp_screen.png", ARTIFACTS / name,
                   geometry(x11(f"xwininfo -id {window}")))

    def press_return(title: str, missing: str, shot: str | None = None) -> None:
        """Wait for the dialog "Easel: <title>…" (``missing`` if it never comes), screenshot it to
        ``shot`` if given, then press Return in it."""
        found = wait_until(lambda: dialog(f"Easel: {title}…\""), 60)
        assert found, missing
        time.sleep(1)
        if shot:
            capture(found[0], shot)
        x11(f"xdotool windowfocus --sync {found[0]} key --clearmodifiers Return")

    def result(i: int) -> dict:
        path = work.host / f"out/gui_result{i}.json"
        assert wait_until(path.exists, 120), f"interactive run {i} did not finish; see {ARTIFACTS / 'gimp_gui.log'}"
        time.sleep(0.3)
        return json.loads(path.read_text())

    try:
        found = wait_until(dialog, 120)
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
        assert first["layers"][0]["record"]["parameters"]["loras"] == [{"name": "ink.safetensors", "weight": 0.5}]

        press_return("Image from Sketch", "the Image from Sketch dialog never appeared")
        running = wait_until(lambda: dialog("step "), 60, step=0.2)
        assert running, "the dialog never showed the server's steps"
        capture(running[0], "gimp_progress.png")
        x11(f"xdotool windowfocus --sync {running[0]} key --clearmodifiers Escape")
        second = result(1)
        assert "error" not in second, second["error"]
        assert second["status"] == "cancel", second
        assert [lay["name"] for lay in second["layers"]] == names  # nothing added

        press_return("Generate", "the third dialog never appeared")
        third = result(2)
        assert third.get("status") == "success", third
        assert third["layers"][0]["name"].startswith(names[0])  # run 0's prompt and seed, remembered
        assert len(third["layers"]) == 3

        press_return("History", "the History dialog never appeared", "gimp_history.png")
        fourth = result(3)
        assert fourth.get("status") == "success", fourth
        assert len(fourth["layers"]) == 4 and fourth["layers"][0]["name"].startswith(names[0])  # GIMP adds " #2"
        assert fourth["layers"][0]["record"] == third["layers"][0]["record"]  # the same stored job

        press_return("Upscale", "the Upscale dialog never appeared", "gimp_upscale.png")
        fifth = result(4)
        assert fifth.get("status") == "success", fifth
        assert fifth["new_image"] == {"size": [640, 480], "layers": 1} and fifth["images"] == 2
        assert len(fifth["layers"]) == 4  # the source image is unchanged
        assert gimp.wait(timeout=60) == 0
    finally:
        if gimp.poll() is None:
            os.killpg(gimp.pid, 15)
            gimp.wait(timeout=20)
        work.cleanup()
