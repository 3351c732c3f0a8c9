"""Krita starts the Easel server itself: a real Krita GUI on Xvfb, nothing listening.

``easel install-plugin krita --serve-args "--models-dir ~/models --threads 1"`` (the tiny test model
in that folder of Krita's HOME) records the server command and its arguments in kritarc. The
self-test plugin tests/editors/krita/easel_autostart/ then uses only the docker's widgets and the
easel_generate action: Generate with nothing at the URL (it starts the server, shows its start-up
and adds the layer), a port held by a plain TCP listener (Connect and Generate say it is not
Easel), a server command that no longer exists typed into Server settings (Connect and Generate
say so), and a server
the test started itself (used, never stopped); the first Generate of all is the one that starts
the server, as right after installing. Once Krita has quit, the server Krita started has
ended and nothing listens on its port; the test's own server still runs. Krita's event loop never
pauses long while any of this waits. With EASEL_KRITA_ROOT (the sid chroot's newest Krita) the
recorded command runs inside the chroot (tests/editors/autostart_site.py).
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
sys.path.insert(0, str(HERE / "krita"))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

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
from krita_host import ARTIFACTS, ROOT, add_test_plugin, krita_command, need, need_krita, scratch, tail, xvfb  # noqa: E402

from easel.client.editing.server_command import probe  # noqa: E402

pytestmark = pytest.mark.editor
MAX_GAP = 1.5  # s: the longest pause of Krita's event loop allowed while a step waits
SERVE_ARGS = "--models-dir ~/models --threads 1"


def krita_run(work, argv: list[str], binds: list[str], **extra: str) -> tuple[list[str], dict[str, str]]:
    """krita_command, with the recorded server's folders visible inside a chroot."""
    if ROOT is None:
        return krita_command(work, argv, **extra)
    cmd, _env = krita_command(work, argv, **extra)  # makes home/run
    home = work.path("home")
    env = dict(HOME=home, XDG_RUNTIME_DIR=f"{home}/run", XDG_CONFIG_HOME=f"{home}/.config",
               XDG_DATA_HOME=f"{home}/.local/share", LC_ALL="C.UTF-8", **extra)
    return bound_chroot_command(ROOT, argv, env, binds)


def failed(out: Path) -> bool:
    try:
        return "error" in json.loads((out / "result.json").read_text())
    except (OSError, ValueError):
        return False


@pytest.fixture(scope="module")
def session(request, tmp_path_factory):
    krita, xvfb_bin, importer = need_krita(request, "krita"), need(request, "Xvfb"), need(request, "import")
    from helpers.server_harness import running_server

    work = scratch("krita-autostart-", tmp_path_factory.getbasetemp())
    home, out = work.host / "home", work.host / "out"
    out.mkdir(parents=True)
    pykrita, kritarc = home / ".local/share/krita/pykrita", home / ".config/kritarc"
    shutil.copytree(request.getfixturevalue("tiny_sd_path"), home / "models" / "tiny-sd")
    said = easel_command("install-plugin", "krita", "--dest", str(pykrita), "--kritarc", str(kritarc),
                         "--serve-args", SERVE_ARGS)
    add_test_plugin(pykrita, kritarc, "easel_autostart")
    recorded = kritarc.read_text()
    command = next(line.split("=", 1)[1] for line in recorded.splitlines() if line.startswith("server_command="))
    held, port = held_port(), free_port()
    url, log = f"ws://127.0.0.1:{port}", home / f".local/state/easel/server-{port}.log"
    spec = dict(width=96, height=64, prompt="a red circle", seed=5, url=url, args=SERVE_ARGS, url2=f"ws://127.0.0.1:{free_port()}",
                held_url=f"ws://127.0.0.1:{held.getsockname()[1]}",
                broken_command="/gone/venv/bin/python -m easel serve", start_timeout=180, quit_wait=120)
    klog, pid = work.host / "krita.log", None
    try:
        with running_server(["easel-demo"], "--threads", "1") as user_url, xvfb(xvfb_bin) as display, \
                open(klog, "w") as fh:
            spec["user_url"] = user_url
            (out / "spec.json").write_text(json.dumps(spec))
            cmd, env = krita_run(work, [krita, "--nosplash"], server_binds(command) if ROOT else [], DISPLAY=display,
                                 EASEL_URL=url,
                                 EASEL_AUTOSTART_TEST=work.path("out"))
            proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                wait_until(lambda: proc.poll() is not None or (out / "ready").exists() or failed(out), 420, step=0.5)
                if (out / "ready").exists():  # the docker with Server settings open, the layers added
                    ARTIFACTS.mkdir(parents=True, exist_ok=True)
                    subprocess.run([importer, "-display", display, "-window", "root", str(ARTIFACTS / "krita_autostart.png")],
                                   check=False, timeout=60, env={**os.environ, "DISPLAY": display})
                runs = server_runs(log)
                pid = runs[0]["pid"] if runs else None
                running_before_quit = bool(pid and pid_alive(pid) and listening(port))
                (out / "quit").touch()
                t0 = time.monotonic()
                proc.wait(90)
                ended = wait_until(lambda: pid is None or (not pid_alive(pid) and not listening(port)), 30)
                after_quit = time.monotonic() - t0
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)
            user_alive = probe(user_url)[0] == "easel"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy2(klog, ARTIFACTS / "krita_autostart.log")
        if log.exists():
            shutil.copy2(log, ARTIFACTS / "krita_autostart_server.log")
        result_path = out / "result.json"
        if not result_path.exists():
            pytest.fail(f"the autostart self-test wrote no result; Krita log:\n{tail(klog)}")
        result = json.loads(result_path.read_text())
        print(f"Krita {result.get('krita_version')}: installer {said.splitlines()}; Krita quit and the server "
              f"ended within {after_quit:.1f} s")
        for name, step in result.get("steps", {}).items():
            print(f"  {name}: {step.get('seconds')} s, longest GUI pause {step.get('gap')} s: {step.get('status')}")
        yield dict(result=result, runs=runs, running_before_quit=running_before_quit, ended=ended,
                   user_alive=user_alive, log=log, port=port, kritarc=kritarc, command=command, klog=klog)
    finally:
        held.close()
        if pid and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        if work.root is not None:
            work.cleanup()


def step(session, name: str) -> dict:
    result = session["result"]
    assert "error" not in result, f"the self-test failed inside Krita:\n{result['error']}"
    assert name in result["steps"], f"step {name} did not run: {result}\n{tail(session['klog'])}"
    return result["steps"][name]


def test_the_docker_shows_the_recorded_command(session):
    panel = session["result"]["panel"]
    assert panel["command"] == session["command"] and panel["command"].endswith(" -m easel serve")
    assert panel["args"] == SERVE_ARGS and panel["autostart"] is True
    assert panel["state"] == "no server started by Krita is running"
    first = session["result"]["first_connection"]
    assert first.startswith("not connected: no server runs at ws://127.0.0.1:") and "Generate (or Connect) starts one" in first


def test_a_port_held_by_something_else_is_named(session):
    s = step(session, "held")
    words = "is taken by a program that is not an Easel server"
    assert words in s["connection"] and words in s["status"] and "c0392b" in s["error_style"], s
    assert s["done"] and s["started_busy"] and s["new_layers"] == []
    assert max(s["gap"], s["connect_gap"]) < MAX_GAP, s


def test_a_broken_command_is_said_by_connect_and_generate(session):
    s = step(session, "broken")
    words = "the server command no longer exists: /gone/venv/bin/python is not there"
    assert words in s["connection"] and words in s["status"], s
    assert s["done"] and s["seconds"] < 10 and s["new_layers"] == []
    assert max(s["gap"], s["connect_gap"]) < MAX_GAP, s


def test_generate_starts_the_server_and_the_layer_arrives(session):
    s = step(session, "started")
    assert s["done"] and s["status"].startswith("Added 1 layer"), s
    assert s["new_layers"] == ["Easel: a red circle [5]"]
    assert any("starting the server" in text for text in s["progress"]), s["progress"]
    assert "Krita started the server on port" in s["server_state"]
    assert s["gap"] < MAX_GAP, s
    assert len(session["runs"]) == 1 and session["running_before_quit"]
    assert "models: tiny-sd" in session["log"].read_text()  # ~/models of Krita's HOME


def test_a_server_the_painter_started_is_used_and_never_stopped(session):
    s = step(session, "user")
    assert s["connection"].startswith("connected"), s
    assert s["done"] and s["new_layers"] == ["Easel: a red circle [5]"]
    assert session["user_alive"], "Krita stopped a server it did not start"


def test_once_krita_has_quit_nothing_is_left(session):
    assert session["ended"], f"the server Krita started still runs:\n{session['log'].read_text()}"
    text = session["log"].read_text()
    assert "Easel: shutting down" in text and "which started this server, has ended" not in text  # Krita stopped it
    assert "server_command=/gone/venv/bin/python -m easel serve\n" in session["kritarc"].read_text()  # as typed
