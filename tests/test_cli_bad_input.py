"""Every ``easel`` command refuses bad input before any work: a non-zero exit, one line on stderr that
names the flag (or the value, where the message comes from the connection), and never a traceback.

Each case runs the real command as a subprocess; they fail before torch is imported, so each takes
about as long as Python's start-up."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from helpers.server_harness import REPO


def easel(*args: str, home: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {"HF_HUB_OFFLINE": "1", "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home,
           "EASEL_CONFIG": os.path.join(home, "no-config.toml"), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "easel", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_refused(r: subprocess.CompletedProcess, names: str) -> str:
    """The one error line (checked against ``names``)."""
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "Traceback" not in out, out
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{r.stderr}"
    assert lines[0].startswith("easel") and names in lines[0], lines[0]
    return lines[0]


SERVE = [
    (["--port", "70000"], "--port"),
    (["--print-config", "--port", "70000"], "--port"),
    (["--port", "-1"], "--port"),
    (["--port", "eighty"], "--port"),
    (["--max-loaded", "0"], "--max-loaded"),
    (["--keep-days", "-1"], "--keep-days"),
    (["--keep-results", "1.5"], "--keep-results"),
    (["--threads", "0"], "--threads"),
    (["--workers", "0"], "--workers"),
    (["--idle-exit", "-5"], "--idle-exit"),
    (["--parent-pid", "me"], "--parent-pid"),
    (["--ray-timeout", "0"], "--ray-timeout"),
    (["--dtype", "float8"], "--dtype"),
    (["--channels-last", "sideways"], "--channels-last"),
    (["--cpu-offload", "layers"], "--cpu-offload"),
    (["--device", "tpu"], "--device"),
    (["--print-config", "--device", "cuda:0,tpu"], "--device"),
    (["--no-such-flag"], "--no-such-flag"),
    (["--config", "{home}/missing.toml"], "config file"),
]
CONFIG_FILES = [("port = 70000", "'port'"), ("port = \"80\"", "'port'"), ("keep_days = -2", "'keep_days'"),
                ("devise = \"cpu\"", "'devise'"), ("workers = 2", "'workers'")]
OTHERS = [
    (["models", "--url", "notaurl"], "notaurl"),
    (["models", "--url", "ws://127.0.0.1:{closed}"], "ws://127.0.0.1:{closed}"),
    (["models", "--local", "--models-dir", "{home}/missing"], "{home}/missing"),
    (["models", "--local", "--config", "{home}/missing.toml"], "config file"),
    (["download", "not-a-hub-id!"], "not-a-hub-id!"),
    (["download", "org/name", "--to", "/proc/easel"], "--to"),
    (["download"], "hub_id"),
    (["install-plugin", "photoshop"], "editor"),
    (["install-plugin", "krita", "--dest", "/proc/easel"], "--dest"),
    (["install-plugin", "krita", "--dest", "{home}/k", "--kritarc", "/proc/easel/kritarc"], "--kritarc"),
    (["install-plugin", "gimp", "--gimp-version", "2.10"], "--gimp-version"),
    (["package-plugin", "krita", "--out", "/proc/easel.zip"], "--out"),
    (["package-plugin", "krita", "--out", "{home}/missing/k.zip"], "--out"),
    (["package-plugin", "photoshop"], "editor"),
    (["demo-model", "fly"], "action"),
    (["demo-model", "train", "--minutes", "soon"], "--minutes"),
    (["demo-model", "train", "--batch", "0"], "--batch"),
    (["demo-model", "train", "--out", "/proc/easel-demo"], "--out"),
    (["generate", "--prompt", "x", "--out", "/proc/x.png"], "--out"),
    (["generate", "--prompt", "x", "--out", "{home}/x.txt", "--url", "ws://127.0.0.1:{closed}"], "--out"),
    (["generate", "--prompt", "x", "--out", "{home}/o.png", "--steps", "abc"], "--steps"),
    (["generate", "--prompt", "x", "--out", "{home}/o.png", "--steps", "0"], "--steps"),
    (["generate", "--prompt", "x", "--out", "{home}/o.png", "--image", "{home}/missing.png"], "--image"),
    (["generate", "--prompt", "x", "--out", "{home}/o.png", "--url", "notaurl"], "notaurl"),
    (["generate", "--prompt", "x"], "--out"),
]


@pytest.mark.parametrize("argv, names", SERVE, ids=[" ".join(a) for a, _ in SERVE])
def test_serve_refuses_bad_flags_before_loading(tmp_path, argv, names):
    argv = [a.format(home=tmp_path) for a in argv]
    r = easel("serve", *argv, home=str(tmp_path))
    assert_refused(r, names)
    assert "loading the engine" not in r.stdout


@pytest.mark.parametrize("text, names", CONFIG_FILES, ids=[t for t, _ in CONFIG_FILES])
def test_serve_refuses_bad_config_files_like_flags(tmp_path, text, names):
    config = tmp_path / "easel.toml"
    config.write_text(text + "\n")
    for extra in ([], ["--print-config"]):
        line = assert_refused(easel("serve", "--config", str(config), *extra, home=str(tmp_path)), names)
        assert str(config) in line


@pytest.mark.parametrize("argv, names", OTHERS)
def test_commands_refuse_bad_input_in_one_line(tmp_path, argv, names):
    closed = closed_port()
    fill = {"home": tmp_path, "closed": closed}
    r = easel(*(a.format(**fill) for a in argv), home=str(tmp_path))
    assert_refused(r, names.format(**fill))
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob("*.txt"))


def test_serve_on_a_port_in_use_says_so_before_loading(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = easel("serve", "--port", str(port), home=str(tmp_path))
    line = assert_refused(r, f"port {port}")
    assert "--port" in line and "stop the other server" in line
    assert "loading the engine" not in r.stdout and "ready" not in r.stdout
