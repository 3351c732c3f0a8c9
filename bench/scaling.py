"""Scaling: throughput with 1 vs 2 workers (``--workers``) and 1 vs 2 Ray Serve replicas,
and the per-job overhead Ray adds over a plain worker.

Same job as ``concurrency`` (4-step 512² txt2img on the tiny SD model, raw RGBA, previews on) from 4
closed-loop clients. Ray: one local instance (127.0.0.1) with two replicas, one torch thread each;
"1 replica" sends through one front-door slot (one job in flight), "2 replicas" through two. The
overhead rows time single jobs one after another on one plain worker and on one Ray slot.
On a 2-core machine two workers or replicas share the same two cores: expect little gain.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from . import fixtures
from .common import Row
from .concurrency import round_of

CLIENTS = 4


def _throughput(url: str, jobs: int) -> tuple[float, float]:
    round_of(url, 1, 1)  # warm up (every worker loads on its first job)
    wall, latencies = round_of(url, CLIENTS, jobs)
    every = [x for lat in latencies for x in lat]
    return CLIENTS * jobs / wall, statistics.median(every)


def _sequential(url: str, jobs: int, **kw: Any) -> float:
    from easel.client.connection import Client, new_job_id
    from easel.client.protocol import GenerateRequest

    times = []
    with Client(url, image_format="rgba", timeout=600) as client:
        for i in range(jobs + 1):
            t0 = time.perf_counter()
            client.generate(GenerateRequest(job=new_job_id(), prompt=fixtures.PROMPT, seed=i, **kw))
            times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def _serve_workers(engines: list[Any] | None = None, workers: list[Any] | None = None):
    import sys
    from pathlib import Path

    from easel.server.results import ResultStore

    sys.path.insert(0, str(fixtures.REPO / "tests"))  # the harness the other sections use (fixtures.serve)
    from helpers.server_harness import inprocess_server

    store = ResultStore(Path(fixtures.tmpdir("results")))
    return inprocess_server(engines or (), store=store, workers=workers or ())


def run(quick: bool = False) -> list[Row]:
    jobs = 2 if quick else 3
    spec = fixtures.tiny_sd(512)
    rows: list[Row] = []
    big = {"steps": 4}
    small = {"steps": 1, "width": 64, "height": 64, "preview": False, "exact_size": True}  # overhead-bound
    plain: dict[str, float] = {}
    for n in (1, 2):
        engines = [fixtures.engine_for(spec) for _ in range(n)]
        with _serve_workers(engines) as (url, _):
            tput, lat = _throughput(url, jobs)
            rows.append(Row("scaling", f"{n} worker{'s' * (n > 1)}: throughput, {CLIENTS} clients", tput, "job/s",
                            note=f"median latency {lat:.2f} s"))
            if n == 1:
                plain = {"big": _sequential(url, jobs + 2, **big), "small": _sequential(url, 9, **small)}
        for e in engines:
            e.close()
    rows.append(Row("scaling", "2 workers / 1 worker", rows[1].value / rows[0].value, "×",
                    note="same two cores shared"))
    try:
        from easel.server.rayserve.cluster import RayCluster, import_ray

        import_ray()
    except Exception as exc:  # no Ray: say so in the table
        rows.append(Row("scaling", "Ray rows", None, "", note=f"skipped: {exc}"))
        return rows
    from easel.server.engine import Engine

    catalog = Engine([spec.ref], device="cpu", dtype="float32")
    t0 = time.perf_counter()
    cluster = RayCluster.start("local", (2, 2), {"models": [spec.ref], "device": "cpu", "dtype": "float32"},
                               threads=1)
    rows.append(Row("scaling", "Ray local start + 2 replicas ready", time.perf_counter() - t0, "s"))
    try:
        ray_tput = []
        for n in (1, 2):  # fresh slots for each front door (closing one closes its slots)
            with _serve_workers(workers=cluster.workers(catalog)[:n]) as (url, _):
                tput, lat = _throughput(url, jobs)
                ray_tput.append(tput)
                rows.append(Row("scaling", f"Ray {n} replica{'s' * (n > 1)}: throughput, {CLIENTS} clients", tput,
                                "job/s", note=f"median latency {lat:.2f} s"))
                if n == 1:
                    ray_big, ray_small = _sequential(url, jobs + 2, **big), _sequential(url, 9, **small)
        rows.append(Row("scaling", "Ray 2 replicas / 1 replica", ray_tput[1] / ray_tput[0], "×",
                        note="same two cores shared"))
        rows.append(Row("scaling", "Ray per-job overhead, 1-step 64² job", ray_small - plain["small"], "s",
                        note=f"Ray {ray_small * 1000:.0f} ms vs plain worker {plain['small'] * 1000:.0f} ms"))
        rows.append(Row("scaling", "Ray per-job overhead, 4-step 512² job", ray_big - plain["big"], "s",
                        note=f"Ray {ray_big:.2f} s vs plain worker {plain['big']:.2f} s"))
    finally:
        cluster.close()
        catalog.close()
    return rows
