"""Easel on Ray Serve: a local Ray on 127.0.0.1, started and stopped here, two replicas of
the tiny model, the real front door (App) in this process. Marked ``ray``; skipped without easel[ray].

The same checks as ``--workers 2`` (tests/helpers/scale_checks.py), then the faults: the head gone (its GCS and
raylet killed under ``easel serve --ray local``), a replica killed mid-job, a replica hung (SIGSTOP).
Every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from easel.client.connection import Client
from easel.server.engine import Engine
from easel.server.lifetime import pid_alive
from easel.server.results import ResultStore
from helpers.probes import wait_until
from helpers.scale_checks import (
    cancel_running,
    eight_clients_five_jobs,
    fairness_spread,
    plain_server_pixels,
    req,
    same_pixels,
)
from helpers.server_harness import inprocess_server, running_server

pytest.importorskip("ray.serve")
pytestmark = pytest.mark.ray


def test_serve_ray_local_replicas_2(tiny_sd_path):
    """``easel serve --ray local --replicas 2``, as the editors start it (its own Ray, stopped with it); first,
    before this module's own Ray starts."""
    with running_server([str(tiny_sd_path)], "--ray", "local", "--replicas", "2", "--threads", "1",
                        "--device", "cpu", timeout=180) as url:
        with Client(url, image_format="rgba") as c:
            assert len(c.welcome["workers"]) == 2
            assert c.generate(req(steps=1)).images


def _family(pid: int) -> dict[int, bytes]:
    """``pid``'s descendants (pid -> command line), from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                parents[int(entry)] = int(f.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            pass
    found, todo = {}, [pid]
    while todo:
        parent = todo.pop()
        for child in [p for p, pp in parents.items() if pp == parent]:
            try:
                with open(f"/proc/{child}/cmdline", "rb") as f:
                    found[child] = f.read()
            except OSError:
                continue
            todo.append(child)
    return found


def _fetch(client: Client, job: str, timeout: float = 30) -> dict:
    client.send({"type": "fetch", "job": job})
    for event in client.events(timeout=timeout):
        if event.job == job and event.type in ("result", "error", "status"):
            return {"type": event.type, **event.data}
    raise AssertionError("no answer to fetch")


def test_head_gone_the_front_door_keeps_serving(tiny_sd_path, tmp_path):
    """``easel serve --ray local --replicas 1`` with its Ray head's GCS and raylet killed (SIGKILL): the front
    door process lives on, welcomes, lists its models, hands out the finished result (fetch), and a new job
    gets a clear ``worker_failed`` error (cause and fix) within a deadline; a job in flight ends too. Then
    the server starts a new local Ray, and jobs succeed again."""
    log = tmp_path / "serve.log"
    with running_server([str(tiny_sd_path)], "--ray", "local", "--replicas", "1", "--threads", "1", "--device", "cpu",
                        "--status-lines", "--output-dir", str(tmp_path / "results"), timeout=180,
                        log_path=log) as url:
        server = wait_until(lambda: next((json.loads(line.split(":", 1)[1])["pid"] for line in log.read_text()
                                          .splitlines() if line.startswith("easel-status:") and '"ready"' in line),
                                         None), timeout=30)
        assert server
        with Client(url, image_format="rgba") as c:
            finished = req(steps=1)
            c.generate(finished)
            ray = _family(server)
            head = [p for p, cmd in ray.items() if b"gcs_server" in cmd or b"raylet/raylet" in cmd]
            assert len(head) == 2, ray
            in_flight = c.submit(req(steps=150, width=512, height=512))
            next(e for e in c.events(timeout=60) if e.job == in_flight and e.type == "progress")
            for pid in head:
                os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            kind, data = _outcome(c, in_flight, timeout=90)  # it may finish: its replica can outlive the raylet
            assert kind == "result" or data["code"] == "worker_failed", data
            print(f"head gone: the job in flight ended with {kind} {time.monotonic() - killed:.1f} s after")
            while True:  # jobs go on while Ray's driver lives; then they fail clearly
                assert time.monotonic() - killed < 90, "no clear error 90 s after the head went away"
                kind, data = _outcome(c, c.submit(req(steps=1)), timeout=60)
                if kind == "error":
                    break
            print(f"head gone: new jobs fail after {time.monotonic() - killed:.1f} s")
            assert data["code"] == "worker_failed", data
            assert "the local Ray instance this server started is gone" in data["message"]
            assert "try again in a minute" in data["message"]
        assert pid_alive(server)
        with Client(url, image_format="rgba", timeout=10) as c:  # the front door still serves
            assert c.welcome["workers"] and c.models()
            assert _fetch(c, finished.job)["type"] == "result", "the finished result was lost"
            t0 = time.monotonic()
            kind, data = _outcome(c, c.submit(req(steps=1)), timeout=10)
            assert kind == "error" and data["code"] == "worker_failed" and time.monotonic() - t0 < 5, data
            back = time.monotonic()  # meanwhile the server starts a new local Ray

            def served() -> bool:
                return _outcome(c, c.submit(req(steps=1)), timeout=60)[0] == "result"

            assert wait_until(served, timeout=180, step=2), "no new local Ray within 180 s"
            print(f"head gone: a new local Ray serves {time.monotonic() - back:.1f} s later")
    # Ray's own processes end with their head (Ray's agents within about a minute); none is left behind
    gone = wait_until(lambda: not any(pid_alive(p) for p in ray), timeout=120, step=0.5)
    print(f"head gone: Ray's last process ended {time.monotonic() - killed:.1f} s after")
    left = [p for p in ray if pid_alive(p)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert gone, f"Ray processes outlived their head: {[ray[p][:40] for p in left]}"


@pytest.fixture(scope="module")
def cluster(tiny_sd_path):
    from easel.server.rayserve.cluster import RayCluster

    kwargs = {"models": [str(tiny_sd_path)], "device": "cpu", "dtype": "float32"}
    made = RayCluster.start("local", (2, 2), kwargs, threads=1, cpus=2)
    yield made
    made.close()


@pytest.fixture(scope="module")
def front(cluster, tiny_sd_path, tmp_path_factory):
    catalog = Engine([str(tiny_sd_path)], device="cpu", dtype="float32")
    workers = cluster.workers(catalog, start_timeout=20, step_timeout=10)
    store = ResultStore(tmp_path_factory.mktemp("results"))
    with inprocess_server(None, store=store, workers=workers) as (url, app):
        yield url, app


def test_welcome_and_40_of_40(front):
    url, _ = front
    with Client(url) as c:
        assert [w["device"] for w in c.welcome["workers"]] == ["ray", "ray"]
    eight_clients_five_jobs(url)


def test_fair_within_1_25x(front):
    spread = fairness_spread(front[0], steps=8)  # jobs long enough that Ray's per-job overhead is not the noise
    assert spread <= 1.25, f"slowest/fastest client median latency {spread:.2f}"


def _replica_pids() -> list[int]:
    """This machine's Easel replica processes (Ray titles them ``ray::ServeReplica:easel:easel-engine``)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if b"ServeReplica:easel:easel-engine" in f.read():
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_cancel_stops_within_a_step(front):
    """The cancelled run really stops on its replica: measured in the replicas' own CPU time, so at any speed."""
    url, _ = front
    pids = _replica_pids()
    assert pids

    def cpu() -> float:
        return sum(_cpu_seconds(p) for p in pids)

    with Client(url) as c:
        warm = {c.submit(req(steps=1)) for _ in pids}  # one each (a replica takes one job at a time): both warm
        while warm:
            warm.discard(next(e.job for e in c.events(timeout=90) if e.job in warm and e.type == "result"))
        t0 = cpu()
        c.generate(req(steps=60, width=128, height=128))
        sixty_steps = cpu() - t0  # the cancelled job runs 120 steps of this size
    t0 = cpu()
    cancel_running(url)

    def quiet() -> bool:  # less than a fifth of a core over 0.5 s: no replica is computing
        before = cpu()
        time.sleep(0.5)
        return cpu() - before < 0.1

    assert wait_until(quiet, timeout=60, step=0), "the replicas never went idle after cancel"
    used = cpu() - t0
    print(f"cancel: the cancelled job cost the replicas {used:.2f} s of CPU; 60 steps cost {sixty_steps:.2f} s")
    assert used < sixty_steps, f"a replica kept computing after cancel: {used:.2f} s of CPU, 60 steps take {sixty_steps:.2f}"


def test_same_pixels_as_a_plain_server(front, tiny_sd_path):
    kw = {"steps": 3, "seed": 42, "width": 64, "height": 64}
    reference = plain_server_pixels(tiny_sd_path, **kw)
    same_pixels(front[0], reference, **kw)


def _job_on_a_replica(app, client: Client, steps: int = 120) -> tuple[str, int]:
    """Submit a long job; wait until a replica runs it; its id and the replica's pid."""
    job = client.submit(req(steps=steps, width=128, height=128))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for worker in app.workers:
            if worker.running is not None and worker.running.id == job and worker.replica_pid:
                return job, worker.replica_pid
        time.sleep(0.05)
    raise AssertionError("the job never started on a replica")


def _outcome(client: Client, job: str, timeout: float = 90) -> tuple[str, dict]:
    for event in client.events(timeout=timeout):
        if event.job == job and event.type in ("result", "error", "cancelled"):
            return event.type, event.data
    raise AssertionError("no outcome")


def test_replica_killed_mid_job_is_retried_elsewhere(front):
    url, app = front
    with Client(url, image_format="rgba") as c:
        job, pid = _job_on_a_replica(app, c, steps=60)
        os.kill(pid, signal.SIGKILL)
        kind, data = _outcome(c, job)
        assert kind == "result" or (kind == "error" and data["code"] == "worker_failed"), data
        assert kind == "result", f"not retried: {data}"
        # and the server goes on: Ray replaces the dead replica
        assert c.generate(req(steps=1)).images


def test_hung_replica_times_out_and_the_job_goes_elsewhere(front):
    url, app = front
    with Client(url, image_format="rgba") as c:
        job, pid = _job_on_a_replica(app, c, steps=60)
        os.kill(pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            kind, data = _outcome(c, job, timeout=120)
            assert kind in ("result", "error"), data
            assert time.monotonic() - t0 < 100
        finally:
            os.kill(pid, signal.SIGCONT)
