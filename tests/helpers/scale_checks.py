"""Checks shared by the several-worker tests (``--workers 2``) and the Ray Serve tests.

Each takes the ws:// URL of a running server; every wait has a deadline.
"""

from __future__ import annotations

import statistics
import threading
import time

import numpy as np

from easel.client.connection import Client, new_job_id
from easel.client.protocol import GenerateRequest
from helpers.pictures import pixels


def req(**kw) -> GenerateRequest:
    kw.setdefault("prompt", "a blue square")
    kw.setdefault("steps", 2)
    kw.setdefault("seed", 3)
    return GenerateRequest(job=new_job_id(), **kw)


def eight_clients_five_jobs(url: str, deadline_s: float = 240) -> dict[str, int]:
    """8 clients submit 5 jobs each at once: 40/40 results, none lost or duplicated. Returns jobs per worker."""
    got: dict[int, list[str]] = {}
    sent: dict[int, list[str]] = {}
    workers: dict[str, int] = {}
    lock = threading.Lock()

    def run(i: int) -> None:
        with Client(url, image_format="rgba") as c:
            jobs = [c.submit(req(steps=1, seed=i * 10 + k)) for k in range(5)]
            sent[i] = jobs
            seen = []
            for event in c.events(timeout=deadline_s):
                if event.type == "result":
                    seen.append(event.job)
                    with lock:
                        name = event.data.get("worker", "?")
                        workers[name] = workers.get(name, 0) + 1
                    if len(seen) == 5:
                        break
                elif event.type in ("error", "cancelled"):
                    raise AssertionError(f"client {i}: {event.data}")
            got[i] = seen

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(deadline_s)
    assert sorted(got) == list(range(8)), f"clients finished: {sorted(got)}"
    for i in range(8):
        assert sorted(got[i]) == sorted(sent[i]), f"client {i} lost or got extra results"
    assert sum(workers.values()) == 40
    return workers


def fairness_spread(url: str, clients: int = 8, jobs: int = 6, deadline_s: float = 240, **kw) -> float:
    """Closed-loop clients (each submits its next job when the last one's result is in, as a painter
    pressing Generate again): slowest / fastest per-client median latency, first job left out (it
    depends only on the order the clients connected in)."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    start = threading.Barrier(clients + 1)

    def run(i: int) -> None:
        try:
            with Client(url, image_format="rgba", timeout=deadline_s) as c:
                start.wait(60)
                for k in range(jobs):
                    t0 = time.perf_counter()
                    c.generate(req(**{"steps": 4, "width": 128, "height": 128, **kw}, seed=i * 100 + k))
                    latencies[i].append(time.perf_counter() - t0)
        except Exception as exc:  # reported below
            errors.append(f"{type(exc).__name__}: {exc}")
            start.abort()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait(120)
    for t in threads:
        t.join(deadline_s)
    assert not errors, errors
    medians = [statistics.median(lat[1:]) for lat in latencies]
    return max(medians) / min(medians)


def cancel_running(url: str, steps: int = 120, deadline_s: float = 120) -> None:
    """A long job is cancelled after its first step: ``cancelled`` arrives, and soon (within a few steps)."""
    with Client(url, image_format="rgba") as c:
        job = c.submit(req(steps=steps, width=128, height=128))
        step_times: list[float] = []
        for event in c.events(timeout=deadline_s):
            if event.job != job:
                continue
            if event.type == "progress" and event.data.get("stage") == "denoise":
                step_times.append(time.monotonic())
                if len(step_times) == 3:
                    c.cancel(job)
                    asked = time.monotonic()
            elif event.type == "cancelled":
                break
            elif event.type in ("result", "error"):
                raise AssertionError(f"expected cancelled, got {event.type}: {event.data}")
        assert len(step_times) >= 3
        step = (step_times[2] - step_times[0]) / 2
        after = len([t for t in step_times if t > asked])
        assert after <= 3, f"{after} steps ran after cancel (a step takes {step:.3f} s)"
        # and the worker is free again
        assert pixels(c.generate(req(steps=1)).images[0].image).shape == (64, 64, 4)


def plain_server_pixels(model_path: str, **kw) -> np.ndarray:
    """The image a plain one-worker in-process server makes for ``req(**kw)`` with ``model_path``."""
    from easel.server.engine import Engine
    from helpers.server_harness import inprocess_server

    with Engine([str(model_path)], device="cpu", dtype="float32") as plain:
        with inprocess_server(plain) as (url, _), Client(url, image_format="rgba") as c:
            return pixels(c.generate(req(**kw)).images[0].image)


def same_pixels(url: str, reference: np.ndarray, **kw) -> None:
    """The server's image for ``req(**kw)`` equals ``reference`` (a plain server's) exactly."""
    with Client(url, image_format="rgba") as c:
        for _ in range(2):  # on any worker or replica
            got = pixels(c.generate(req(**kw)).images[0].image)
            assert np.array_equal(got, reference), "pixels differ from a plain server's"
