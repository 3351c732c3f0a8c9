"""Shared benchmark helpers: medians over repeats, interleaved A/B timing, the machine, result rows."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Row:
    section: str
    name: str
    value: float | None  # None: not measured here (skipped; the note says why)
    unit: str
    target: str = ""
    ok: bool | None = None  # None: no target
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check(section: str, name: str, value: float, unit: str, target: str, note: str = "") -> Row:
    """A row with a target such as ``"<= 1.05"`` or ``">= 0.9"``; ``ok`` is computed from it."""
    op, _, limit = target.partition(" ")
    bound = float(limit.rstrip("%×"))
    value = float(value)
    ok = value <= bound if op == "<=" else value >= bound
    return Row(section, name, value, unit, target, bool(ok), note)


def median_time(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in seconds over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int = 5, warmup: int = 1) -> dict[str, list[float]]:
    """Wall times of several functions measured in turns (ABC, CBA, ABC, …) so that a machine whose
    load drifts (other processes on a shared box) slows them all alike. Returns the times per name."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def med(values: list[float]) -> float:
    return statistics.median(values)


def paired_ratio(top: list[float], bottom: list[float]) -> float:
    """Median of the per-round ratios of two ``interleaved`` series: each pair ran back to back, under
    the same machine load, so this is steadier than a ratio of medians on a busy shared box."""
    return statistics.median(t / b for t, b in zip(top, bottom, strict=True))


def setup_threads(threads: int) -> None:
    """The torch thread count every section runs with (see docs/performance.md for why 1 by default)."""
    import torch

    torch.set_num_threads(threads)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}
    try:
        with open("/proc/loadavg") as fh:
            info["load"] = float(fh.read().split()[0])  # how busy the shared box was
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def rss_mb() -> float:
    """Resident set size of this process in MiB (Linux)."""
    return _status("VmRSS:")


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux)."""
    return _status("VmHWM:")


def _status(key: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    return float("nan")


def loadavg() -> str:
    """The 1/5/15-minute load averages, as ``uptime`` prints them (for notes on a shared machine)."""
    try:
        with open("/proc/loadavg") as fh:
            return " ".join(fh.read().split()[:3])
    except OSError:
        return "?"


def bf16_flags() -> str:
    """The CPU's native-bf16 flags (``avx512_bf16``, ``amx_bf16``), or ``none``."""
    import re

    try:
        with open("/proc/cpuinfo") as fh:
            found = sorted(set(re.findall(r"\b(avx512_bf16|amx_bf16)\b", fh.read())))
    except OSError:
        found = []
    return " ".join(found) or "none"
