"""How a plugin starts a local Easel server: the recorded command, its arguments, and asking a port
who answers there (stdlib + this package only; the process side is in ``launcher``).

``easel install-plugin EDITOR [--serve-args "ARGS"]`` records, in the plugin's settings (Krita:
kritarc group ``[easel]``; GIMP: ``easel-gimp.json`` in its profile), under the keys of
``ServerSettings.to_strings``::

    server_command   = /home/me/easel/.venv/bin/python -m easel serve   (this installation's server)
    server_args      = --models-dir ~/models                            (extra ``easel serve`` arguments)
    server_autostart = true                                             ("Start a local server when needed")

A started server gets ``--host 127.0.0.1 --port PORT`` (the URL's port) after those, so the URL wins,
plus ``--status-lines`` (start-up progress as ``STATUS_PREFIX`` lines), ``--parent-pid`` (it exits
with the editor) and, for GIMP, ``--idle-exit SECONDS``.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..connection import Client, ClientError

COMMAND_KEY, ARGS_KEY, AUTOSTART_KEY, IDLE_KEY = "server_command", "server_args", "server_autostart", "server_idle_exit"
STATUS_PREFIX = "easel-status: "  # a server started with --status-lines prints its start-up as these lines
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass
class ServerSettings:
    """What starts this plugin's local server. ``idle_exit``: seconds without clients after which
    the server exits (0: never; Krita stops it when it quits)."""

    command: str = ""
    args: str = ""
    autostart: bool = True
    idle_exit: int = 0

    @classmethod
    def from_strings(cls, values: Mapping[str, object], idle_exit: int = 0) -> ServerSettings:
        """From an editor's settings (strings or JSON values); missing or unreadable keys keep defaults."""
        auto = values.get(AUTOSTART_KEY, True)
        if isinstance(auto, str):
            auto = auto.strip().lower() not in ("false", "0", "no", "off")
        try:
            idle = int(values.get(IDLE_KEY, idle_exit) or 0)
        except (TypeError, ValueError):
            idle = idle_exit
        return cls(str(values.get(COMMAND_KEY) or "").strip(), str(values.get(ARGS_KEY) or "").strip(),
                   bool(auto), max(0, idle))

    def to_strings(self) -> dict[str, str]:
        return {COMMAND_KEY: self.command, ARGS_KEY: self.args, AUTOSTART_KEY: "true" if self.autostart else "false"}


def recorded_command(executable: str | None = None) -> str:
    """The command that starts the Easel server of the Python running this (``sys.executable``)."""
    return join_command([executable or sys.executable, "-m", "easel", "serve"])


def join_command(argv: list[str]) -> str:
    return subprocess.list2cmdline(argv) if os.name == "nt" else shlex.join(argv)


def split_command(text: str) -> list[str]:
    """A command line as the painter typed it (POSIX shell quoting; Windows: double quotes)."""
    if os.name != "nt":
        return shlex.split(text)
    return [part[1:-1] if len(part) > 1 and part[0] == part[-1] == '"' else part
            for part in shlex.split(text, posix=False)]


def expand_home(arg: str) -> str:
    """``~/models`` and ``--models-dir=~/models`` as full paths (no shell runs the command)."""
    if arg.startswith("~"):
        return os.path.expanduser(arg)
    name, eq, value = arg.partition("=")
    return f"{name}={os.path.expanduser(value)}" if eq and name.startswith("-") and value.startswith("~") else arg


def serve_argv(settings: ServerSettings, port: int, parent_pid: int | None = None) -> list[str]:
    """The argv that starts the server on 127.0.0.1:``port``; ValueError on unreadable quoting."""
    command = split_command(settings.command)
    if not command:
        raise ValueError("no server command is set")
    argv = command + [expand_home(a) for a in split_command(settings.args)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--status-lines"]
    if parent_pid:
        argv += ["--parent-pid", str(parent_pid)]
    if settings.idle_exit:
        argv += ["--idle-exit", str(settings.idle_exit)]
    return argv


def server_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The editor's environment minus what belongs to its own bundled Python (Krita's AppImage and
    Windows builds set PYTHONHOME/PYTHONPATH; an AppImage's library folders would shadow the
    server's), with unbuffered output so start-up lines reach the log at once."""
    env = dict(os.environ if environ is None else environ)
    for key in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONEXECUTABLE", "__PYVENV_LAUNCHER__"):
        env.pop(key, None)
    appdir = env.get("APPDIR")
    if appdir:
        for key in ("LD_LIBRARY_PATH", "QT_PLUGIN_PATH"):
            kept = [p for p in env.get(key, "").split(os.pathsep) if p and not p.startswith(appdir)]
            if kept:
                env[key] = os.pathsep.join(kept)
            else:
                env.pop(key, None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def parse_status(line: str) -> dict | None:
    """A ``STATUS_PREFIX`` line's JSON object, or None for any other line."""
    if not line.startswith(STATUS_PREFIX):
        return None
    try:
        data = json.loads(line[len(STATUS_PREFIX):])
    except ValueError:
        return None
    return data if isinstance(data, dict) and isinstance(data.get("stage"), str) else None


def status_text(status: dict) -> tuple[int, int, str]:
    """(step, total, words) for a start-up status line, for a progress bar."""
    stage, message = status["stage"], str(status.get("message") or "")
    step, total = int(status.get("step") or 0), int(status.get("total") or 0)
    words = {"engine": "loading torch and diffusers", "ready": "the server is ready"}.get(stage, message or stage)
    return step, total, f"starting the server: {message or words}"


def local_port(url: str) -> int | None:
    """The port of ``url`` when it names this machine (a loopback host), else None: only a server
    on this machine can be started."""
    try:
        parts = urlsplit(url if "://" in url else f"ws://{url}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if host not in LOOPBACK and f"[{host}]" not in LOOPBACK:
        return None
    return port or (443 if parts.scheme == "wss" else 80)


def probe(url: str, token: str | None = None, timeout: float = 3.0, client_name: str = "easel-plugin") -> tuple[str, str]:
    """Who answers at ``url``: ("easel", "") an Easel server (or one that wants a token: the job's own
    connection says so); ("nothing", why) nobody listens; ("other", what it said) something else."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=timeout):
            pass
    except OSError as exc:
        return "nothing", exc.strerror or str(exc)
    client = Client(url, timeout=timeout, client_name=client_name, token=token)
    try:
        client.connect()
    except ClientError as exc:
        cause = exc.__cause__
        status = getattr(getattr(cause, "response", None), "status_code", None)
        if status in (401, 403):
            return "easel", ""
        if status:
            return "other", f"it answered HTTP {status}"
        if isinstance(cause, TimeoutError):
            return "other", f"it accepted the connection but did not answer within {timeout:g} s"
        return "other", "it did not answer as an Easel server"
    client.close()
    return "easel", ""
