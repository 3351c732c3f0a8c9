"""A server started by an editor plugin: the start-up lines its launcher reads, and when it exits.

    --status-lines   start-up progress on stdout as ``easel-status: {json}`` lines
                     (parsed by easel.client.editing.server_command.parse_status)
    --parent-pid PID exit when process PID (the editor that started the server) has ended
    --idle-exit S    exit after S seconds with no client connected and no job queued or running
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from typing import Any, TextIO

from ..client.editing.server_command import STATUS_PREFIX


class StatusLines:
    """Writes ``easel-status:`` lines when enabled; progress within one stage at most every
    ``interval`` seconds (a download reports every chunk), its first and last step always."""

    def __init__(self, enabled: bool, stream: TextIO | None = None, interval: float = 0.5):
        self.enabled, self.stream, self.interval = enabled, stream or sys.stdout, interval
        self._last = ("", 0.0)

    def say(self, stage: str, step: int = 0, total: int = 0, message: str = "", **extra: Any) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        last_stage, last_time = self._last
        if stage == last_stage and now - last_time < self.interval and 0 < step < total:
            return
        self._last = (stage, now)
        data = {"stage": stage, "step": step, "total": total, "message": message, **extra}
        self.stream.write(STATUS_PREFIX + json.dumps(data) + "\n")
        self.stream.flush()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie counts as ended)."""
    if sys.platform == "win32":
        import ctypes

        kernel = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel.OpenProcess(0x00100000, False, pid)  # SYNCHRONIZE
        if not handle:
            return kernel.GetLastError() == 5  # access denied: it exists
        try:
            return kernel.WaitForSingleObject(handle, 0) != 0  # WAIT_OBJECT_0: it has exited
        finally:
            kernel.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def busy(app: Any) -> bool:
    """A client is connected, or a job is queued or running."""
    server = getattr(app, "server", None)
    return bool(app.running is not None or len(app.queue) or (server is not None and server.connections))


async def watch(app: Any, stop: asyncio.Event, *, parent_pid: int | None, idle_exit: float | None,
                say: StatusLines, every: float = 1.0) -> None:
    """Set ``stop`` when the parent process has ended or the server was idle ``idle_exit`` seconds."""
    idle_since = time.monotonic()
    while not stop.is_set():
        await asyncio.sleep(every)
        now = time.monotonic()
        if parent_pid and not pid_alive(parent_pid):
            print(f"Easel: process {parent_pid}, which started this server, has ended: stopping", flush=True)
            say.say("exit", message="the program that started the server has ended")
            stop.set()
        elif busy(app):
            idle_since = now
        elif idle_exit and now - idle_since >= idle_exit:
            print(f"Easel: no client for {idle_exit:g} s: stopping (--idle-exit)", flush=True)
            say.say("exit", message="idle")
            stop.set()


async def serve_until_stopped(app: Any, host: str, port: int, status: StatusLines, *, parent_pid: int | None,
                              idle_exit: float | None) -> None:
    """Listen on ``host:port`` until SIGINT/SIGTERM, the parent process's end or the idle timeout; then close."""
    await app.start(host, port)
    print(f"Easel is serving on ws://{host}:{app.port} (Ctrl+C to stop)", flush=True)
    status.say("ready", url=f"ws://{host}:{app.port}", pid=os.getpid())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(watch(app, stop, parent_pid=parent_pid, idle_exit=idle_exit, say=status))
    await stop.wait()
    watcher.cancel()
    print("Easel: shutting down", flush=True)
    await app.close()
