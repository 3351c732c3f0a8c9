"""Start real Easel servers for tests: in-process (fast) or as an `easel serve` subprocess.

    with running_server(["/path/to/tiny-sd"]) as url:      # subprocess, what editors talk to
        ...
    with inprocess_server(engine) as (url, app):           # same App, in a thread of this process
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def running_server(models: list[str], *extra: str, timeout: float = 120.0, log_path: Path | None = None,
                   env: dict[str, str] | None = None) -> Iterator[str]:
    """Run `python -m easel serve` on a free 127.0.0.1 port; yields its ws:// URL."""
    cmd = [sys.executable, "-u", "-m", "easel", "serve", "--host", "127.0.0.1", "--port", "0", *extra]
    for m in models:
        cmd += ["--model", m]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    log = open(log_path, "w+") if log_path else None  # closed below
    proc = subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines: list[str] = []
    url = None
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if log:
            log.write(line)
        m = re.search(r"serving on (ws://\S+)", line)
        if m:
            url = m.group(1)
            break
    if url is None:
        proc.kill()
        raise RuntimeError("easel serve did not start:\n" + "".join(lines))

    def drain() -> None:  # keep reading so the server never blocks on a full pipe
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if log:
                log.write(line)
                log.flush()

    threading.Thread(target=drain, daemon=True).start()
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        if log:
            log.close()


@contextlib.contextmanager
def inprocess_server(engine, limits=None, store=None, security=None, **app_kwargs) -> Iterator[tuple[str, object]]:
    """Run the real App (real websockets on 127.0.0.1) in a background event loop (``app_kwargs``: e.g. workers)."""
    from easel.server.app import App

    loop = asyncio.new_event_loop()
    app = App(engine, limits, store=store, security=security, **app_kwargs)
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(app.start("127.0.0.1", 0))
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(30)
    try:
        yield f"ws://127.0.0.1:{app.port}", app
    finally:
        asyncio.run_coroutine_threadsafe(app.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@contextlib.contextmanager
def stored_server(models: list[str], results: Path) -> Iterator[tuple[str, object]]:
    """(url, app) of an in-process server (``inprocess_server``) with ``models`` on the CPU in float32 and a
    result store in ``results``: the ``served`` fixtures of tests/conftest.py and the flow-family modules."""
    from easel.server.engine import Engine
    from easel.server.results import ResultStore

    engine = Engine([str(m) for m in models], device="cpu", dtype="float32")
    with inprocess_server(engine, store=ResultStore(results)) as served:
        yield served


def short_request(**kw):
    """A GenerateRequest for quick tiny-model jobs: 2 steps, seed 5, the exact size asked; ``kw`` overrides."""
    from easel.client.connection import new_job_id
    from easel.client.protocol import GenerateRequest

    kw.setdefault("prompt", "a red circle")
    kw.setdefault("steps", 2)
    kw.setdefault("seed", 5)
    kw.setdefault("exact_size", True)
    return GenerateRequest(job=new_job_id(), **kw)
