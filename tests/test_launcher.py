"""The plugins' server launcher (easel.client.editing.launcher) against real processes: a real
``easel serve`` on a free port, commands that exit, stall or are missing, a port held by a plain TCP
listener. Every wait has a deadline; every process started here is reaped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from easel.client import editing
from easel.client.connection import Client, JobCancelled, new_job_id
from easel.client.editing.launcher import LaunchError, ServerManager
from easel.client.editing.server_command import ServerSettings, join_command, probe, recorded_command
from easel.client.protocol import GenerateRequest
from helpers.probes import free_port, listening

SERVE = recorded_command(sys.executable)  # this checkout's server, as install-plugin records it
FAST = "--threads 1"  # the demo model (the default): starts offline in a few seconds


def fake(code: str) -> str:
    """A server command that runs ``code`` instead of Easel (it gets the serve arguments, unused)."""
    return join_command([sys.executable, "-c", code])


@pytest.fixture
def manager(tmp_path):
    made = ServerManager("Test", str(tmp_path / "logs"), parent_pid=os.getpid(), stall=20, where="the test")
    yield made
    made.stop()


def test_starts_the_recorded_server_reports_progress_reuses_it_and_stops_only_it(manager):
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    seen: list[tuple[int, int, str]] = []
    t0 = time.monotonic()
    assert manager.ensure(url, None, ServerSettings(SERVE, FAST), lambda *s: seen.append(s)) is True
    print(f"started in {time.monotonic() - t0:.1f} s")
    words = [w for _s, _t, w in seen]
    assert words[0] == "starting the server…"
    assert any("loading torch and diffusers" in w for w in words) and any("easel-demo" in w for w in words)
    assert any(w == "starting the server: the server is ready" for w in words)
    assert probe(url) == ("easel", "")
    pid = manager.server.pid
    assert manager.ensure(url, None, ServerSettings(SERVE, FAST)) is False  # answering: nothing started
    with Client(url, image_format="rgba") as client:
        result = client.generate(GenerateRequest(job=new_job_id(), prompt="a red circle", seed=1, steps=4))
    assert result.images[0].image.width == 64
    assert "started the server on port" in manager.describe()
    assert manager.stop() == 0  # SIGTERM: a clean shutdown
    assert not listening(port)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # reaped, not a zombie
    assert "no server started by Test" in manager.describe()


def test_a_missing_command_says_so_at_once(manager, tmp_path):
    gone = tmp_path / "moved-venv" / "bin" / "python"
    t0 = time.monotonic()
    with pytest.raises(LaunchError) as err:
        manager.ensure(f"ws://127.0.0.1:{free_port()}", None, ServerSettings(f"{gone} -m easel serve"))
    assert time.monotonic() - t0 < 10
    assert "the server command no longer exists" in str(err.value) and str(gone) in str(err.value)
    assert "easel install-plugin test" in str(err.value) and manager.server is None


def test_no_command_and_autostart_off_need_no_process(manager):
    url = f"ws://127.0.0.1:{free_port()}"
    assert manager.ensure(url, None, ServerSettings("", "x")) is False  # nothing recorded: the connect error follows
    with pytest.raises(LaunchError, match="cannot be read"):
        manager.ensure(url, None, ServerSettings(SERVE, "--models-dir 'unclosed"))
    with pytest.raises(LaunchError, match="switched off.*Start a local server when needed"):
        manager.ensure(url, None, ServerSettings(SERVE, autostart=False))
    assert manager.ensure("ws://127.0.0.1:9", None, ServerSettings(SERVE)) is False  # below 1024: never started
    assert manager.ensure("ws://192.0.2.1:8765", None, ServerSettings(SERVE)) is False  # another machine


def test_a_server_that_exits_during_start_up_shows_its_last_lines(manager):
    code = "import sys; print('loading…'); print('easel serve: no such model: /nope', file=sys.stderr); sys.exit(2)"
    with pytest.raises(LaunchError) as err:
        manager.ensure(f"ws://127.0.0.1:{free_port()}", None, ServerSettings(fake(code)))
    text = str(err.value)
    assert "exited during start-up (exit code 2)" in text and "easel serve: no such model: /nope" in text
    assert "Correct the server arguments in the test" in text and "server-" in text  # the log's path
    assert manager.server is None


def test_the_real_server_with_bad_arguments_exits_with_its_own_words(manager, tmp_path):
    with pytest.raises(LaunchError) as err:
        manager.ensure(f"ws://127.0.0.1:{free_port()}", None,
                       ServerSettings(SERVE, f"{FAST} --model {tmp_path / 'missing.safetensors'}"))
    assert "exited during start-up (exit code 2)" in str(err.value)
    assert "missing.safetensors" in str(err.value)


def test_a_port_held_by_something_else_is_named(manager):
    with socket.socket() as held:  # a plain TCP listener that never speaks
        held.bind(("127.0.0.1", 0))
        held.listen(4)
        port = held.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(LaunchError) as err:
            manager.ensure(f"ws://127.0.0.1:{port}", None, ServerSettings(SERVE))
        assert time.monotonic() - t0 < 10
    text = str(err.value)
    assert f"port {port} on this machine is taken by a program that is not an Easel server" in text
    assert f"ws://127.0.0.1:{port + 1}" in text and manager.server is None


def test_an_http_server_on_the_port_is_named_too(manager):
    import http.server

    class Handler(http.server.SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # websockets reads only HTTP/1.1 answers as statuses

        def log_message(self, *_args) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with pytest.raises(LaunchError, match=r"not an Easel server \(it answered HTTP"):
            manager.ensure(f"ws://127.0.0.1:{httpd.server_port}", None, ServerSettings(SERVE))
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_stalled_start_is_stopped_and_reaped(tmp_path):
    manager = ServerManager("Test", str(tmp_path), stall=1.5)
    with pytest.raises(LaunchError, match="did not get ready: nothing new in its log"):
        manager.ensure(f"ws://127.0.0.1:{free_port()}", None, ServerSettings(fake("import time; time.sleep(60)")))
    assert manager.server is None


def test_cancel_stops_the_server_being_started(manager):
    cancel = threading.Event()
    statuses: list[str] = []
    threading.Timer(1.0, cancel.set).start()
    t0 = time.monotonic()
    with pytest.raises(JobCancelled):
        manager.ensure(f"ws://127.0.0.1:{free_port()}", None, ServerSettings(fake("import time; time.sleep(60)")),
                       lambda _s, _t, w: statuses.append(w), cancel)
    assert time.monotonic() - t0 < 12 and statuses == ["starting the server…"]
    assert manager.server is None


def test_a_task_starts_the_server_and_a_crash_mid_job_is_explained(manager):
    """The plugins' path: a ClientTask whose ``prepare`` starts the server (start-up shown as the job's
    load progress); the server is killed during a long job; the error names the crash and its log."""
    url, job = f"ws://127.0.0.1:{free_port()}", new_job_id()
    planned = editing.plan_request(editing.EditorState(64, 64), editing.Params(prompt="a star", seed=3, steps=150,
                                                                               batch=4))
    planned.request.job = job
    progress, done = [], threading.Event()
    out: dict = {}

    def on_progress(info) -> None:
        progress.append(info)
        if info.stage == "denoise" and info.step >= 2 and "killed" not in out:
            out["killed"] = manager.server.pid
            os.kill(manager.server.pid, signal.SIGKILL)

    task = editing.ClientTask(url, editing.generate_work(planned, on_progress), job=job,
                              on_done=lambda value, error: (out.update(error=error), done.set()),
                              **manager.hooks(url, None, ServerSettings(SERVE, FAST), job, on_progress))
    task.start()
    assert done.wait(120), "the task never ended"
    loads = [p for p in progress if p.stage == "load"]
    assert loads and loads[0].job == job and loads[0].message == "starting the server…"
    assert "killed" in out, f"no denoising progress: {out}"
    error = out["error"]
    assert "the Easel server that Test started stopped during the job (killed by signal 9)" in error, error
    assert "Its last lines:" in error and "Try again" in error
    assert manager.server is None


def test_idle_exit_and_parent_pid_end_a_started_server(tmp_path):
    """GIMP's lifetime: --idle-exit ends a server nobody uses; --parent-pid ends it with its editor."""
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        manager = ServerManager("Test", str(tmp_path), parent_pid=parent.pid)
        port = free_port()
        url = f"ws://127.0.0.1:{port}"
        manager.ensure(url, None, ServerSettings(SERVE, FAST, idle_exit=2))
        proc = manager.server.proc
        with Client(url):  # a connected client keeps it alive past the idle time
            time.sleep(3.5)
            assert proc.poll() is None
        assert proc.wait(15) == 0, "idle: it should have stopped by itself"
        assert "no client for 2 s" in Path(manager.server.log).read_text()
        manager.ensure(url, None, ServerSettings(SERVE, FAST))  # no idle exit: only the parent ends it
        proc = manager.server.proc
        parent.kill()
        parent.wait(10)
        assert proc.wait(15) == 0
        assert "which started this server, has ended" in Path(manager.server.log).read_text()
        assert not listening(port)
    finally:
        parent.kill()
        parent.wait(10)
