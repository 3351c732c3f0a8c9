"""Cold start for ``make bench-full`` (``--only cold``): ``easel serve`` as a painter starts it.

Process start to torch imported, to listening, to the default model loaded, to the first result (a job
sent the moment it listens) and a second job; with ``--compile`` the same twice over one fresh inductor
cache (compiling, then the cache of the first start reused).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from . import fixtures
from .common import Row, loadavg, med
from .fullsize import context, easel_job, threads


def cold_once(folder: Path, dtype: str, *extra: str, env: dict[str, str] | None = None) -> dict[str, float]:
    """Start ``easel serve`` on the model (``extra`` flags) and send one job as soon as it listens, then a
    second; seconds from the process start to each moment its output (or the client) shows."""
    import re
    import subprocess
    import threading

    cmd = [sys.executable, "-u", "-m", "easel", "serve", "--host", "127.0.0.1", "--port", "0", "--model",
           str(folder), "--dtype", dtype, "--threads", str(threads()),
           "--output-dir", fixtures.tmpdir("cold-results"), *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    patterns = {"engine imported": r"^device ", "listening": r"serving on (ws://\S+)",
                "model loaded": r"default model is loaded"}
    moments: dict[str, float] = {}
    lines: list[str] = []
    url: list[str] = []
    listening = threading.Event()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=fixtures.REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            for moment, pattern in patterns.items():
                found = re.search(pattern, line)
                if found and moment not in moments:
                    moments[moment] = time.perf_counter() - t0
                    if moment == "listening":
                        url.append(found.group(1))
                        listening.set()
        listening.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        listening.wait(600)
        if not url:
            raise RuntimeError("easel serve did not start:\n" + "".join(lines[-20:]))
        easel_job(url[0], str(folder), 2)
        moments["first result"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        easel_job(url[0], str(folder), 2)
        moments["second job"] = time.perf_counter() - t1
    finally:
        proc.terminate()
        proc.wait(60)
    return moments


def import_seconds() -> float:
    """``import easel.server.engine`` (torch, diffusers, transformers) in a fresh interpreter."""
    import subprocess

    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "from easel.server.engine import Engine"], check=True,
                   cwd=fixtures.REPO)
    return time.perf_counter() - t0


def cold_rows(folder: Path, dtype: str, repeats: int, compiled: bool) -> list[Row]:
    """Process start to listening, to the model loaded and to the first result; with ``compiled``, the
    same with ``--compile`` twice over one fresh inductor cache (compiling, then the cache reused)."""
    before = loadavg()
    imports = [import_seconds() for _ in range(repeats)]
    runs = [cold_once(folder, dtype) for _ in range(repeats)]
    note = f"`easel serve --model FOLDER --dtype {dtype}`, median of {repeats}; {context(dtype)}; load {before}"
    rows = [Row("full", "cold: import torch + diffusers (the Engine)", med(imports), "s", note=note)]
    for moment in ("engine imported", "listening", "model loaded", "first result", "second job"):
        values = [r[moment] for r in runs if moment in r]
        if values:
            name = "cold: the second job (warm)" if moment == "second job" else f"cold: process start to {moment}"
            rows.append(Row("full", name, med(values), "s", note=note))
    if compiled:
        cache = {"TORCHINDUCTOR_CACHE_DIR": fixtures.tmpdir("inductor")}
        for label in ("empty cache", "cache from the first start"):
            run = cold_once(folder, dtype, "--compile", env=cache)
            note = f"`easel serve --compile`, {label}, once; {context(dtype)}; load {loadavg()}"
            rows.append(Row("full", f"cold --compile, {label}: process start to first result", run["first result"],
                            "s", note=note))
            rows.append(Row("full", f"cold --compile, {label}: the second job", run["second job"], "s", note=note))
    return rows
