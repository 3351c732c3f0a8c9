"""The job queue: round-robin across clients, bounded, cancellable."""

import pytest

from easel.client.protocol import GenerateRequest
from easel.server.jobs import Job, JobQueue, QueueFull


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
