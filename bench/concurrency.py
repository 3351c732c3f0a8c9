"""Concurrency: 1, 4 and 8 plugin clients generating at once against one server.

Each client is a thread with its own connection (raw RGBA, previews on, as the plugins run) that
submits a 4-step 512² txt2img job, waits for its result, and submits the next, like a painter
pressing Generate again. One worker runs jobs one at a time and serves clients round-robin, so
throughput should not drop with more clients, and every client should wait about as long as any
other: latency grows with the number of clients (each waits for the others' jobs), evenly.

Rows: throughput (jobs/s, and relative to one client), median job latency, and the spread of the
per-client median latencies (slowest client / fastest client) in steady state: each client's first
job is left out of the spread, since how long it waits depends only on the order the clients
connected in (client k of n waits for k jobs).
"""

from __future__ import annotations

import statistics
import threading
import time

from . import fixtures
from .common import Row, check

STEPS = 4


def client_loop(url: str, jobs: int, start: threading.Barrier, latencies: list[float], errors: list[str]) -> None:
    from easel.client.connection import Client, new_job_id
    from easel.client.protocol import GenerateRequest

    try:
        with Client(url, image_format="rgba", client_name="easel-plugin/bench", timeout=600) as client:
            start.wait()
            for i in range(jobs):
                request = GenerateRequest(job=new_job_id(), prompt=fixtures.PROMPT, steps=STEPS, seed=i)
                t0 = time.perf_counter()
                client.generate(request)
                latencies.append(time.perf_counter() - t0)
    except Exception as exc:  # reported in the table, not a traceback from a thread
        errors.append(f"{type(exc).__name__}: {exc}")
        start.abort()


def round_of(url: str, clients: int, jobs: int) -> tuple[float, list[list[float]]]:
    """Wall time for ``clients`` x ``jobs`` jobs and the latencies per client."""
    start = threading.Barrier(clients + 1)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    threads = [threading.Thread(target=client_loop, args=(url, jobs, start, latencies[i], errors), daemon=True)
               for i in range(clients)]
    for t in threads:
        t.start()
    start.wait(60)
    t0 = time.perf_counter()
    for t in threads:
        t.join(900)
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"a client failed: {errors[0]}")
    return wall, latencies


def run(quick: bool = False) -> list[Row]:
    spec = fixtures.tiny_sd(512)
    engine = fixtures.engine_for(spec)
    plan = [(1, 3), (4, 2), (8, 2)]
    order = plan if quick else plan + plan[::-1]  # there and back: a drifting machine load hits all alike
    rows: list[Row] = []
    with fixtures.serve(engine) as (url, _):
        round_of(url, 1, 1)  # warm up
        walls: dict[int, float] = {}
        lats: dict[int, list[list[float]]] = {}
        for clients, jobs in order:
            wall, latencies = round_of(url, clients, jobs)
            walls[clients] = walls.get(clients, 0.0) + wall
            lats[clients] = [a + b for a, b in zip(lats.get(clients, [[]] * clients), latencies)]
        single = None
        for clients, _ in plan:
            latencies, wall = lats[clients], walls[clients]
            jobs = len(latencies[0])  # per client, over all rounds
            throughput = clients * jobs / wall
            single = single or throughput
            rounds = 1 if quick else 2
            per_client = [statistics.median([x for k, x in enumerate(lat) if k % (jobs // rounds)] or lat)
                          for lat in latencies]
            every = [x for lat in latencies for x in lat]
            first = [lat[0] for lat in latencies]  # the first job of the first round
            tag = f"{clients} client{'s' if clients > 1 else ''}"
            rows.append(Row("concurrency", f"{tag}: throughput ({jobs} jobs each)", throughput, "job/s",
                            note=f"{clients * jobs} jobs in {wall:.1f} s"))
            if clients > 1:
                rows.append(check("concurrency", f"{tag}: throughput / 1 client", throughput / single, "×", ">= 0.9"))
            rows.append(Row("concurrency", f"{tag}: median latency", statistics.median(every), "s",
                            note=f"max {max(every):.2f} s; about {clients} job(s) of {1 / single:.2f} s each"))
            if clients > 1:
                spread = max(per_client) / min(per_client)
                rows.append(check("concurrency", f"{tag}: per-client median latency, slowest / fastest", spread, "×",
                                  "<= 1.25", f"fairness, steady state; first jobs waited {min(first):.2f} to {max(first):.2f} s"))
    engine.close()
    return rows
