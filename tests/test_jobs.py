"""The job queue: round-robin across clients, bounded, cancellable; queue positions and live pacing."""

import math
import time

import pytest

from easel.client.protocol import GenerateRequest
from easel.server.jobs import Job, JobQueue, LivePacing, QueueFull


def job(jid: str, client: str) -> Job:
    return Job(jid, client, GenerateRequest(job=jid, prompt="p"))


def test_single_jobs_run_in_arrival_order():
    q = JobQueue()
    for i, c in enumerate("abc"):
        q.add(job(f"j{i}", c))
    assert [q.pop_next().id for _ in range(3)] == ["j0", "j1", "j2"]
    assert q.pop_next() is None


def test_a_batch_cannot_starve_another_client():
    q = JobQueue()
    for i in range(5):
        q.add(job(f"a{i}", "A"))
    assert q.add(job("b0", "B")) == 2  # served right after A's first job
    q.add(job("b1", "B"))
    order = [q.pop_next().id for _ in range(len(q))]
    assert order == ["a0", "b0", "a1", "b1", "a2", "a3", "a4"]


def test_remove_drop_and_positions():
    q = JobQueue()
    for j in (job("a0", "A"), job("a1", "A"), job("b0", "B")):
        q.add(j)
    assert [j.id for j in q.order()] == ["a0", "b0", "a1"]
    assert q.remove("b0").id == "b0" and q.position("a1") == 2
    assert [j.id for j in q.drop_client("A")] == ["a0", "a1"]
    assert len(q) == 0 and q.pop_next() is None


def test_per_client_bound_and_duplicate_ids():
    q = JobQueue(max_per_client=2)
    q.add(job("a0", "A"))
    q.add(job("a1", "A"))
    with pytest.raises(QueueFull, match="limit 2"):
        q.add(job("a2", "A"))
    q.add(job("b0", "B"))  # others are not affected
    with pytest.raises(ValueError):
        q.add(job("a0", "A"))


def test_queued_position_counts_only_waiting_jobs():
    """``queued.position`` is 1 for the job served next (docs/protocol.md), the running job not counted."""
    from easel.client.connection import Client, new_job_id
    from easel.server.engine import Engine
    from helpers.server_harness import inprocess_server
    from helpers.slow_engine import SlowEngine

    def request() -> GenerateRequest:
        return GenerateRequest(job=new_job_id(), prompt="a red circle", steps=2, seed=1, preview=False)

    def position(client: Client, job: str) -> int:
        return next(e.data["position"] for e in client.events(timeout=30) if e.type == "queued" and e.job == job)

    engine = SlowEngine(Engine(["easel-demo"], device="cpu", dtype="float32"), delay=30.0)
    with inprocess_server(engine) as (url, app), Client(url) as a, Client(url) as b, Client(url) as c:
        first = a.submit(request())
        assert position(a, first) == 1  # nothing running, nothing waiting: next
        deadline = time.monotonic() + 30
        while getattr(app.running, "id", None) != first:
            assert time.monotonic() < deadline, "the first job never started"
            time.sleep(0.005)
        second = b.submit(request())
        assert position(b, second) == 1  # only the running job is ahead: served next
        third = c.submit(request())
        assert position(c, third) == 2
        assert app.running.id == first  # still running: the positions above were taken behind it
        for client, job in ((c, third), (b, second), (a, first)):
            client.cancel(job)


def live_job(jid: str, from_idle: bool, started: float = 10.0) -> Job:
    j = Job(jid, "A", GenerateRequest(job=jid, prompt="p", replace=True), from_idle=from_idle)
    j.started, j.state = started, "running"
    return j


def test_live_pacing_stops_only_young_frames_started_from_idle():
    pacing = LivePacing(restart=0.25)
    idle, chained = live_job("a", True), live_job("b", False)
    assert pacing.may_stop(idle, now=99.0), "no frame time known yet: a frame from idle may restart"
    assert not pacing.may_stop(chained, now=10.001), "a frame queued behind live work always finishes"
    pacing.delivered("A", 2.0)
    pacing.delivered("A", 4.0)
    assert pacing.frame_s("A") == pytest.approx(0.7 * 2.0 + 0.3 * 4.0)
    assert pacing.may_stop(idle, now=10.5) and not pacing.may_stop(idle, now=10.7)  # 0.25 x 2.6 s
    assert not pacing.may_stop(chained, now=10.001)
    pacing.forget("A")
    assert pacing.frame_s("A") is None
    assert all(LivePacing(math.inf).may_stop(j, 1e9) for j in (idle, chained))  # the old behaviour
    assert not any(LivePacing(0).may_stop(j, 10.0) for j in (idle, chained))
