"""Recording how to start the server (`easel install-plugin … --serve-args`) and turning the recorded
settings into the command a plugin runs (easel.client.editing.server_command)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from easel.client.editing.server_command import (
    ServerSettings,
    expand_home,
    local_port,
    parse_status,
    recorded_command,
    serve_argv,
    server_env,
    split_command,
    status_text,
)
from easel.plugin_settings import kconfig_escape, set_in_kritarc

REPO = Path(__file__).resolve().parents[1]


def easel(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "server")}
    return subprocess.run([sys.executable, "-m", "easel", *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=home)


def test_install_plugin_krita_records_the_command_and_the_serve_args(tmp_path):
    rc = tmp_path / ".config" / "kritarc"
    rc.parent.mkdir(parents=True)
    rc.write_text("toplevel=1\n[easel]\nprompt=a cat\nserver_autostart=false\n")
    done = easel(tmp_path, "install-plugin", "krita", "--serve-args", "--models-dir ~/models")
    assert done.returncode == 0, done.stderr
    text = rc.read_text()
    assert f"server_command={sys.executable} -m easel serve\n" in text
    assert "server_args=--models-dir ~/models\n" in text
    assert text.startswith("toplevel=1\n[easel]\nprompt=a cat\nserver_autostart=false\n")  # Krita's lines stay
    assert f"recorded the server command ({sys.executable} -m easel serve --models-dir ~/models) in {rc}" in done.stdout
    again = easel(tmp_path, "install-plugin", "krita")  # an update keeps the arguments the painter has
    assert again.returncode == 0 and "server_args=--models-dir ~/models\n" in rc.read_text()
    assert rc.read_text().count("server_command=") == 1


def test_install_plugin_gimp_records_next_to_its_tokens(tmp_path):
    profile = tmp_path / ".config" / "GIMP" / "3.0"
    profile.mkdir(parents=True)
    (profile / "easel-gimp.json").write_text(json.dumps({"url": "ws://127.0.0.1:8765", "tokens": {"a": "b"}}))
    done = easel(tmp_path, "install-plugin", "gimp", "--serve-args=--no-preload")
    assert done.returncode == 0, done.stderr
    saved = json.loads((profile / "easel-gimp.json").read_text())
    assert saved == {"url": "ws://127.0.0.1:8765", "tokens": {"a": "b"},
                     "server_command": f"{sys.executable} -m easel serve", "server_args": "--no-preload"}
    assert (profile / "easel-gimp.json").stat().st_mode & 0o777 == 0o600


def test_gimp_dest_outside_a_profile_is_said_not_guessed(tmp_path):
    from easel.plugin_install import install

    report = install("gimp", tmp_path / "somewhere", serve_args="--threads 1")
    assert not (tmp_path / "easel-gimp.json").exists()
    assert "not recording the server command" in report.recorded[0]


def test_windows_paths_survive_kritarc_escaping(tmp_path):
    exe = r"C:\Users\ann\easel\.venv\Scripts\python.exe"
    assert kconfig_escape(exe) == r"C:\\Users\\ann\\easel\\.venv\\Scripts\\python.exe"
    assert kconfig_escape(" lead and trail ") == r"\slead and trail\s"
    rc = tmp_path / "kritarc"
    set_in_kritarc(rc, "easel", {"server_command": f'"{exe}" -m easel serve'})
    assert rc.read_text() == '[easel]\nserver_command="C:\\\\Users\\\\ann\\\\easel\\\\.venv\\\\Scripts\\\\python.exe" ' \
                             "-m easel serve\n"


def test_serve_argv_puts_the_url_port_last_and_expands_home():
    settings = ServerSettings(recorded_command("/opt/easel venv/bin/python"), "--models-dir ~/models --port 1 "
                              "--config=~/easel.toml", idle_exit=600)
    argv = serve_argv(settings, 8765, parent_pid=42)
    home = os.path.expanduser("~")
    assert argv == ["/opt/easel venv/bin/python", "-m", "easel", "serve", "--models-dir", f"{home}/models", "--port",
                    "1", f"--config={home}/easel.toml", "--host", "127.0.0.1", "--port", "8765", "--status-lines",
                    "--parent-pid", "42", "--idle-exit", "600"]
    assert expand_home("--model=x~y") == "--model=x~y" and expand_home("a~") == "a~"
    assert split_command("'/a b/python' -m easel serve") == ["/a b/python", "-m", "easel", "serve"]
    with pytest.raises(ValueError):
        serve_argv(ServerSettings(""), 8765)


@pytest.mark.parametrize("url, port", [("ws://127.0.0.1:8765", 8765), ("ws://localhost:9000", 9000),
                                       ("ws://[::1]:8766", 8766), ("127.0.0.1:7000", 7000), ("ws://localhost", 80),
                                       ("ws://192.168.1.5:8765", None), ("ws://example.com:8765", None),
                                       ("ws://127.0.0.1:notaport", None)])
def test_only_urls_on_this_machine_can_be_started(url, port):
    assert local_port(url) == port


def test_settings_from_editor_strings():
    s = ServerSettings.from_strings({"server_command": " py -m easel serve ", "server_autostart": "false",
                                     "server_idle_exit": "x"}, idle_exit=600)
    assert (s.command, s.args, s.autostart, s.idle_exit) == ("py -m easel serve", "", False, 600)
    assert ServerSettings.from_strings({}).autostart is True  # on by default
    assert ServerSettings.from_strings({"server_autostart": False, "server_idle_exit": 30}).idle_exit == 30
    assert ServerSettings("c", "a", False).to_strings() == {"server_command": "c", "server_args": "a",
                                                            "server_autostart": "false"}


def test_status_lines_and_the_words_shown():
    line = 'easel-status: {"stage": "load", "step": 5, "total": 10, "message": "downloading x: 5 / 10 MiB"}'
    status = parse_status(line)
    assert status_text(status) == (5, 10, "starting the server: downloading x: 5 / 10 MiB")
    assert status_text({"stage": "engine"})[2] == "starting the server: loading torch and diffusers"
    for junk in ("loading: x 0/1", "easel-status: {bad", 'easel-status: ["stage"]', 'easel-status: {"stage": 3}'):
        assert parse_status(junk) is None


def test_server_env_drops_the_editors_python_and_appimage_libraries():
    env = server_env({"PYTHONHOME": "/krita/usr", "PYTHONPATH": "/krita/lib", "APPDIR": "/tmp/.mount_krita",
                      "LD_LIBRARY_PATH": "/tmp/.mount_krita/usr/lib:/opt/cuda/lib64", "HOME": "/home/ann"})
    assert env == {"APPDIR": "/tmp/.mount_krita", "LD_LIBRARY_PATH": "/opt/cuda/lib64", "HOME": "/home/ann",
                   "PYTHONUNBUFFERED": "1"}
