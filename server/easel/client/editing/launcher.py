"""Start a local Easel server when a plugin needs one, follow its start-up, stop only what it started.

    manager = ServerManager("Krita", log_dir(), parent_pid=os.getpid(), where="the docker's Server settings")
    manager.ensure(url, token, settings, on_status, cancel)  # worker thread: probe, start, wait for Easel
    manager.explain(exc)                                     # a connection error, with the log if it died
    manager.stop()                                           # only the server this manager started

Nothing here blocks without a deadline: a start that makes no progress for ``stall`` seconds is
stopped, and ``cancel`` (a threading.Event) stops the wait (and the server being started) at once.
The server's output goes to ``log_dir()/server-PORT.log``; error messages quote its last lines.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from ..connection import ClientError, JobCancelled, ProgressInfo
from .server_command import ServerSettings, local_port, parse_status, probe, serve_argv, server_env, status_text

StatusFn = Callable[[int, int, str], None]  # step, total, words
TAIL_LINES = 12


class LaunchError(ClientError):
    """The local server could not be started or stopped working; the message says why and what to do."""


def log_dir(environ: dict[str, str] | None = None, platform: str = sys.platform) -> str:
    """Where started servers log: XDG state (Linux), ~/Library/Logs (macOS), LOCALAPPDATA (Windows)."""
    env = os.environ if environ is None else environ
    home = os.path.expanduser("~")
    if platform == "win32":
        return os.path.join(env.get("LOCALAPPDATA") or os.path.join(home, "AppData", "Local"), "easel", "logs")
    if platform == "darwin":
        return os.path.join(home, "Library", "Logs", "Easel")
    state = env.get("XDG_STATE_HOME", "")
    return os.path.join(state if os.path.isabs(state) else os.path.join(home, ".local", "state"), "easel")


def exit_words(code: int | None) -> str:
    if code is None:
        return "still running"
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"


class LocalServer:
    """One ``easel serve`` process this plugin started, its output going to ``log``."""

    def __init__(self, argv: list[str], log: str, port: int):
        self.argv, self.log, self.port = argv, log, port
        self.proc: subprocess.Popen | None = None
        self._offset = 0
        self._partial = b""

    def start(self) -> None:
        exe = self.argv[0]
        if os.sep in exe or (os.altsep and os.altsep in exe):
            found = exe if os.path.isfile(exe) else None
        else:
            import shutil

            found = shutil.which(exe)
        if not found:
            raise LaunchError(f"the server command no longer exists: {exe} is not there (was the Easel "
                              "installation moved or deleted?)")
        os.makedirs(os.path.dirname(self.log), exist_ok=True)
        if os.path.exists(self.log):
            os.replace(self.log, self.log + ".1")
        flags = {"creationflags": 0x08000000 | 0x00000200} if os.name == "nt" else {"start_new_session": True}
        with open(self.log, "wb") as out:  # CREATE_NO_WINDOW | CREATE_NEW_PROCESS_GROUP on Windows
            try:
                self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                             env=server_env(), cwd=os.path.expanduser("~"), **flags)
            except OSError as exc:
                raise LaunchError(f"the server command {exe} cannot be started: {exc.strerror or exc}") from exc

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def statuses(self) -> tuple[list[dict], bool]:
        """The start-up status lines written since the last call, and whether anything was written."""
        try:
            with open(self.log, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except OSError:
            return [], False
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        found = [parse_status(line.decode("utf-8", "replace").rstrip("\r")) for line in lines]
        return [s for s in found if s], bool(data)

    def tail(self, lines: int = TAIL_LINES) -> str:
        """The log's last lines, without the status lines (the painter reads these)."""
        try:
            with open(self.log, "rb") as fh:
                fh.seek(max(0, os.path.getsize(self.log) - 16384))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        kept = [t.rstrip() for t in text.replace("\r", "\n").splitlines() if t.strip() and parse_status(t) is None]
        return "\n".join(kept[-lines:]) or "(nothing)"

    def stop(self, timeout: float = 10.0) -> int | None:
        """Ask it to stop (SIGTERM: it closes cleanly), kill it after ``timeout`` s; always reaped."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                proc.terminate()
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
            except OSError:
                pass
        try:
            return proc.wait(5)
        except subprocess.TimeoutExpired:
            return None


class ServerManager:
    """Starts, follows and stops the local server of one editor process (thread-safe)."""

    def __init__(self, editor: str, logs: str | None = None, *, parent_pid: int | None = None,
                 where: str = "the plugin's server settings", client_name: str = "easel-plugin",
                 stall: float = 300.0, limit: float = 7200.0):
        self.editor, self.logs, self.parent_pid, self.where = editor, logs or log_dir(), parent_pid, where
        self.client_name, self.stall, self.limit = client_name, stall, limit
        self.server: LocalServer | None = None  # the server this manager started, while it may still run
        self._lock = threading.Lock()

    # -- starting ------------------------------------------------------------------------------
    def ensure(self, url: str, token: str | None, settings: ServerSettings, on_status: StatusFn | None = None,
               cancel: threading.Event | None = None) -> bool:
        """Make sure an Easel server answers at ``url``: start one when the URL is on this machine,
        nothing listens there, ``settings.autostart`` is on and a command is set (no command: the
        connection's own error follows). Ports below 1024 are never started (they need root).
        True when this call started it. Raises LaunchError (plain words) or JobCancelled."""
        port = local_port(url)
        if port is None or port < 1024 or not settings.command.strip():
            return False
        end = time.monotonic() + self.limit
        while not self._lock.acquire(timeout=0.2):  # another thread is starting it: wait for that
            if (cancel is not None and cancel.is_set()) or time.monotonic() > end:
                raise JobCancelled(None)
        try:
            kind, detail = probe(url, token, client_name=self.client_name)
            if kind == "easel":
                return False
            if kind == "other":
                raise LaunchError(f"port {port} on this machine is taken by a program that is not an Easel server "
                                  f"({detail}), so no Easel server can start there. Quit that program, or put "
                                  f"another port in the server URL (e.g. ws://127.0.0.1:{port + 1}), and try again.")
            if not settings.autostart:
                raise LaunchError(f"cannot reach the Easel server at {url} ({detail}), and starting a local server "
                                  f"is switched off: start one (`easel serve --port {port}`) or switch on 'Start a "
                                  f"local server when needed' in {self.where}.")
            server = self.server if self.server is not None and self.server.alive and self.server.port == port else None
            started = server is None
            if server is None:
                try:
                    server = self._start(settings, port)
                except LaunchError as exc:
                    raise LaunchError(f"cannot reach the Easel server at {url}, and {exc}") from None
            self._follow(server, url, token, on_status, cancel)
            return started
        finally:
            self._lock.release()

    def _start(self, settings: ServerSettings, port: int) -> LocalServer:
        try:
            argv = serve_argv(settings, port, self.parent_pid)
        except ValueError as exc:
            raise LaunchError(f"the server command or its arguments cannot be read ({exc}): correct them in "
                              f"{self.where}, or run `easel install-plugin {self.editor.lower()}` again.") from exc
        server = LocalServer(argv, os.path.join(self.logs, f"server-{port}.log"), port)
        try:
            server.start()
        except LaunchError as exc:
            raise LaunchError(f"{exc}. Run `easel install-plugin {self.editor.lower()}` again with the Easel you "
                              f"use, or correct the server command in {self.where}; then try again.") from None
        except OSError as exc:
            raise LaunchError(f"cannot write the server's log in {self.logs}: {exc.strerror or exc}") from exc
        self.server = server
        return server

    def _follow(self, server: LocalServer, url: str, token: str | None, on_status: StatusFn | None,
                cancel: threading.Event | None) -> None:
        """Report ``server``'s start-up until Easel answers at ``url``; stop it on cancel, stall or exit."""
        say = on_status or (lambda *_: None)
        say(0, 0, "starting the server…")
        start = last = time.monotonic()
        ready = False
        next_probe = start + 1.0
        while True:
            if cancel is not None and cancel.is_set():
                self._drop(server)
                raise JobCancelled(None)
            statuses, grew = server.statuses()
            now = time.monotonic()
            if grew or statuses:
                last = now
            for status in statuses:
                say(*status_text(status))
                ready = ready or status["stage"] == "ready"
            if not server.alive:
                code = server.proc.returncode if server.proc else None
                self.server = None
                if probe(url, token, client_name=self.client_name)[0] == "easel":
                    return  # another start won the port (two commands at once): that server serves
                raise LaunchError(f"the Easel server exited during start-up ({exit_words(code)}). Its last lines:\n"
                                  f"{server.tail()}\nCorrect the server arguments in {self.where} and try again "
                                  f"(the whole log: {server.log}).")
            if ready or now >= next_probe:
                next_probe = now + 1.0
                kind, _ = probe(url, token, timeout=5.0 if ready else 1.0, client_name=self.client_name)
                if kind == "easel":
                    if not ready:  # it answered before its "ready" line was read: the bar ends the same way
                        say(*status_text({"stage": "ready"}))
                    return
            if now - last > self.stall or now - start > self.limit:
                self._drop(server)
                raise LaunchError(f"the Easel server did not get ready: nothing new in its log for {now - last:.0f} s, "
                                  f"so it was stopped. Its last lines:\n{server.tail()}\n(the whole log: {server.log})")
            time.sleep(0.1)

    def _drop(self, server: LocalServer) -> None:
        server.stop()
        if self.server is server:
            self.server = None

    # -- after a failure, and at the end ----------------------------------------------------------
    def explain(self, exc: BaseException) -> str:
        """``exc``'s message; when the server this manager started has died, what happened to it instead."""
        server = self.server
        if server is None or isinstance(exc, LaunchError) or server.proc is None:
            return str(exc)
        try:
            code = server.proc.wait(2.0)  # the connection breaks a moment before the process is gone
        except subprocess.TimeoutExpired:
            return str(exc)
        self.server = None
        return (f"the Easel server that {self.editor} started stopped during the job ({exit_words(code)}). "
                f"Its last lines:\n{server.tail()}\nTry again to start it anew (the whole log: {server.log}).")

    def stop(self) -> int | None:
        """Stop the server this manager started (never one the painter started); its exit code."""
        server, self.server = self.server, None
        return server.stop() if server is not None else None

    def describe(self) -> str:
        """One line for a settings panel: is a server running that this editor started?"""
        server = self.server
        if server is not None and server.alive:
            return f"{self.editor} started the server on port {server.port} (process {server.pid}); log: {server.log}"
        return f"no server started by {self.editor} is running"

    def hooks(self, url: str, token: str | None, settings: ServerSettings, job: str | None = None,
              on_progress: Callable[[ProgressInfo], None] | None = None) -> dict:
        """``prepare`` and ``explain`` for ``editing.ClientTask``: start the server before connecting,
        its start-up reported as ``load`` progress of ``job``."""

        def status(step: int, total: int, words: str) -> None:
            if on_progress is not None:
                on_progress(ProgressInfo(job or "", "load", step, total, words))

        return {"prepare": lambda cancel: self.ensure(url, token, settings, status, cancel), "explain": self.explain}
