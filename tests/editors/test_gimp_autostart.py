"""GIMP starts the Easel server itself, in a real GIMP 3 in its Debian chroot.

``easel install-plugin gimp --serve-args "--models-dir ~/models --threads 1"`` (the tiny test model in
that folder of GIMP's HOME) records this checkout's server command (the wheel's under CI) and the
arguments in the profile's easel-gimp.json. Nothing runs at the URL. One batch GIMP
session (tests/editors/gimp/autostart_cases.py) then calls the commands, NONINTERACTIVE:

- a port held by a plain TCP listener: the message says it is not an Easel server;
- a server command that no longer exists (a moved venv), a server that exits during start-up (a
  model that is not there), starting switched off: plain words at once, nothing hangs;
- Generate, Image from Sketch, Regenerate Selection: the first starts the recorded server inside
  the chroot (tests/editors/autostart_site.py makes the host's venv visible there), all three add
  their layer, one server serves them; once GIMP has quit, the server has ended and nothing
  listens on the port (it watches GIMP's process).

A GUI run (GIMP on Xvfb in the chroot) then presses OK in the Generate dialog with nothing running:
the dialog shows the start (artifacts/gimp_autostart_progress.png), the layer arrives, and the
server ends when GIMP quits.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "gimp"))
sys.path.insert(0, str(HERE))

from autostart_site import (  # noqa: E402
    bound_chroot_command,
    free_port,
    held_port,
    listening,
    pid_alive,
    server_binds,
    server_runs,
    wait_until,
)
from editor_site import easel_command  # noqa: E402
from gimp_cases import geometry  # noqa: E402
from gimp_chroot import ARTIFACTS, Workdir, batch_command, chroot_shell, free_display, require_chroot, xwd_to_png  # noqa: E402

from easel.client import editing  # noqa: E402

pytestmark = pytest.mark.editor
W, H = 80, 64
GEN, SKETCH, SEL = "easel-generate", "easel-image-from-sketch", "easel-regenerate-selection"
SERVE_ARGS = "--models-dir ~/models --threads 1"
PROMPTS = {"generate": "a red circle", "sketch": "a blue square", "selection": "a yellow star"}


def cases(url: str, held_url: str) -> list[dict]:
    quick = dict(prompt="x", steps=2, url=url)
    return [
        dict(name="held", procedure=GEN, args=dict(quick, url=held_url)),
        dict(name="broken", procedure=GEN, args=quick, settings={"server_command": "/gone/venv/bin/python -m easel serve"}),
        dict(name="startup-exit", procedure=GEN, args=quick,
             settings={"server_args": "--threads 1 --model /nope/model.safetensors"}),
        dict(name="off", procedure=GEN, args=quick, settings={"server_autostart": "false"}),
        dict(name="generate", procedure=GEN, args=dict(prompt=PROMPTS["generate"], seed=7, steps=4, url=url)),
        dict(name="sketch", procedure=SKETCH, args=dict(prompt=PROMPTS["sketch"], seed=8, steps=4, strength=0.6, url=url)),
        dict(name="selection", procedure=SEL, selection=[8, 8, 32, 24],
             args=dict(prompt=PROMPTS["selection"], seed=9, steps=4, url=url)),
    ]


@pytest.fixture(scope="module")
def session(request):
    """Install with --serve-args, run the batch session with nothing listening at the URL; afterwards
    (GIMP has quit) what became of the server."""
    root = require_chroot(request)
    work = Workdir(root)
    held = held_port()
    port = free_port()
    pid = None
    try:
        shutil.copytree(request.getfixturevalue("tiny_sd_path"), work.host / "home/models/tiny-sd")
        said = easel_command("install-plugin", "gimp", "--dest", str(work.plugins()), "--serve-args", SERVE_ARGS)
        recorded = json.loads((work.plugins().parent / "easel-gimp.json").read_text())
        binds = server_binds(recorded["server_command"])
        url = f"ws://127.0.0.1:{port}"
        spec = dict(cases=cases(url, f"ws://127.0.0.1:{held.getsockname()[1]}"), width=W, height=H,
                    out=work.path("out"))
        (work.host / "spec.json").write_text(json.dumps(spec))
        (work.host / "autostart_cases.py").write_text((HERE / "gimp/autostart_cases.py").read_text())
        assert not listening(port)
        cmd, env = bound_chroot_command(root, ["sh", "-c", batch_command(work.path("autostart_cases.py"), work.version)],
                                        {"HOME": work.path("home"), "EASEL_TEST_SPEC": work.path("spec.json")}, binds)
        t0 = time.monotonic()
        done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=420)
        quit_at = time.monotonic()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "gimp_autostart.log").write_text(done.stdout)
        results_file = work.host / "out/results.json"
        assert results_file.exists(), f"GIMP wrote no results (rc {done.returncode}):\n{done.stdout[-4000:]}"
        results = json.loads(results_file.read_text())
        log = work.host / f"home/.local/state/easel/server-{port}.log"
        runs = server_runs(log)
        pid = runs[0]["pid"] if runs else None
        ended = wait_until(lambda: pid is None or (not pid_alive(pid) and not listening(port)), 30)
        print(f"GIMP {results['gimp']}: batch session {quit_at - t0:.1f} s; server ended "
              f"{time.monotonic() - quit_at:.1f} s after GIMP quit; binds {binds}; installer: {said.splitlines()}")
        (ARTIFACTS / "gimp_autostart_server.log").write_text(log.read_text() if log.exists() else "(none)")
        for case in results["cases"]:
            print(f"  {case['name']}: {case.get('status')} in {case.get('seconds')} s {case.get('message', '')}")
        yield dict(cases={c["name"]: c for c in results["cases"]}, runs=runs, ended=ended, port=port, log=log,
                   recorded=recorded)
    finally:
        held.close()
        if pid and pid_alive(pid):  # never leave an orphan behind, even when the test failed
            os.kill(pid, signal.SIGKILL)
        work.cleanup()


def test_install_recorded_the_command_and_the_serve_args(session):
    assert session["recorded"]["server_command"].endswith(" -m easel serve")
    assert session["recorded"]["server_args"] == SERVE_ARGS


@pytest.mark.parametrize("name, words", [
    ("held", "is taken by a program that is not an Easel server"),
    ("broken", "the server command no longer exists: /gone/venv/bin/python is not there"),
    ("startup-exit", "exited during start-up (exit code 2)"),
    ("off", "starting a local server is switched off"),
])
def test_failures_say_why_at_once(session, name, words):
    case = session["cases"][name]
    assert "error" not in case, case["error"]
    assert case["status"] == "execution-error", case
    assert words in case["message"] and case["message"].startswith("Easel: "), case["message"]
    assert case["seconds"] < 60 and case["layers"] == [], case
    if name == "startup-exit":  # the server's own words, from its log
        assert "/nope/model.safetensors" in case["message"] and "Its last lines:" in case["message"]


@pytest.mark.parametrize("name", ["generate", "sketch", "selection"])
def test_each_command_gets_its_layer_from_the_server_gimp_started(session, name):
    case = session["cases"][name]
    assert "error" not in case, case["error"]
    assert case["status"] == "success", case
    [layer] = case["layers"]
    assert layer["name"].startswith(editing.layer_name(PROMPTS[name], 0).split(" [")[0])


def test_one_server_served_all_three_and_ended_with_gimp(session):
    runs = session["runs"]
    assert len(runs) == 1, f"expected one start, got {runs}"
    assert runs[0]["url"] == f"ws://127.0.0.1:{session['port']}"
    assert session["ended"], f"the server GIMP started still runs after GIMP quit:\n{session['log'].read_text()}"
    assert "which started this server, has ended" in session["log"].read_text()
    assert "models: tiny-sd" in session["log"].read_text()  # ~/models of GIMP's HOME, inside the chroot


def test_gui_generate_shows_the_start_and_the_layer_arrives(request):
    root = require_chroot(request)
    work = Workdir(root)
    port, pid = free_port(), None
    gimp = None
    try:
        shutil.copytree(request.getfixturevalue("tiny_sd_path"), work.host / "home/models/tiny-sd")
        easel_command("install-plugin", "gimp", "--dest", str(work.plugins()), "--serve-args", SERVE_ARGS)
        binds = server_binds(json.loads((work.plugins().parent / "easel-gimp.json").read_text())["server_command"])
        (work.host / "fb").mkdir()
        runs = [dict(procedure=GEN, args=dict(prompt="a red circle", seed=3, steps=3, url=f"ws://127.0.0.1:{port}"))]
        (work.host / "spec.json").write_text(json.dumps(dict(runs=runs, out=work.path("out"))))
        (work.host / "gui_dialog.py").write_text((HERE / "gimp/gui_dialog.py").read_text())
        display = f":{free_display()}"
        script = (f"Xvfb {display} -screen 0 1280x800x24 -nolisten tcp -noreset -fbdir {work.path('fb')} & X=$!; "
                  "for i in $(seq 50); do xwininfo -root >/dev/null 2>&1 && break; sleep 0.2; done; "
                  f"timeout 240 gimp-{work.version} --no-splash --batch-interpreter=python-fu-eval "
                  f"-b \"exec(open('{work.path('gui_dialog.py')}').read())\"; kill $X")
        cmd, env = bound_chroot_command(root, ["sh", "-c", script], {"HOME": work.path("home"), "DISPLAY": display,
                                                                     "EASEL_TEST_SPEC": work.path("spec.json")}, binds)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with open(ARTIFACTS / "gimp_autostart_gui.log", "w") as fh:
            gimp = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)

        def dialog(words: str):
            tree = chroot_shell(root, "xwininfo -root -tree", {"DISPLAY": display}, timeout=30).stdout
            return next((line.split()[0] for line in tree.splitlines() if '"Easel: ' in line and words in line), None)

        def capture(window: str, name: str) -> None:
            info = chroot_shell(root, f"xwininfo -id {window}", {"DISPLAY": display}, timeout=30).stdout
            xwd_to_png(work.host / "fb/Xvfb_screen0", ARTIFACTS / "gimp_autostart_screen.png", ARTIFACTS / name,
                       geometry(info))

        window = wait_until(lambda: dialog("Easel: Generate"), 120, step=0.5)
        assert window, f"the Generate dialog never appeared; see {ARTIFACTS / 'gimp_autostart_gui.log'}"
        time.sleep(2)
        capture(window, "gimp_autostart_dialog.png")
        chroot_shell(root, f"xdotool windowfocus --sync {window} key --clearmodifiers Return", {"DISPLAY": display},
                     timeout=30)
        starting = wait_until(lambda: dialog("starting the server"), 60, step=0.1)
        assert starting, "the dialog never said it was starting the server"
        capture(starting, "gimp_autostart_progress.png")
        result_file = work.host / "out/gui_result0.json"
        assert wait_until(result_file.exists, 120), "the interactive run did not finish"
        time.sleep(0.3)
        result = json.loads(result_file.read_text())
        assert result.get("status") == "success", result
        assert [lay["name"] for lay in result["layers"]] == [editing.layer_name("a red circle", 3), "Sketch"]
        assert gimp.wait(60) == 0
        runs = server_runs(work.host / f"home/.local/state/easel/server-{port}.log")
        pid = runs[0]["pid"] if runs else None
        assert len(runs) == 1 and wait_until(lambda: not pid_alive(pid) and not listening(port), 30), runs
    finally:
        if gimp is not None and gimp.poll() is None:
            os.killpg(gimp.pid, signal.SIGTERM)
            gimp.wait(20)
        if pid and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        work.cleanup()
