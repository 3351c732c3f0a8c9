"""Live painting's replace semantics at the protocol level: stale work is never run or delivered."""

from __future__ import annotations

import pytest

from easel.client.connection import Client, new_job_id
from easel.client.protocol import GenerateRequest
from easel.server.engine import Engine
from helpers.server_harness import inprocess_server


@pytest.fixture(scope="module")
def url(tiny_sd_path):
    engine = Engine([str(tiny_sd_path)], device="cpu", dtype="float32")
    with inprocess_server(engine) as (u, app):
        yield u


def live(steps: int = 6, **kw) -> GenerateRequest:
    return GenerateRequest(job=new_job_id(), prompt="a red circle", steps=steps, seed=9, replace=True,
                           width=128, height=128, **kw)


def events_until_done(client: Client, jobs: set[str]):
    done: set[str] = set()
    for event in client.events(timeout=120):
        if event.job in jobs:
            yield event
            if event.type in ("result", "cancelled", "error"):
                done.add(event.job)
                if done == jobs:
                    return


def test_newer_live_requests_replace_queued_and_running_ones(url):
    with Client(url) as c:
        jobs = [c.submit(live())]
        for event in c.events(timeout=60):  # the first frame is rendering: the strokes below outpace it
            if event.job == jobs[0] and event.type == "progress" and event.data["stage"] == "denoise":
                break
        jobs += [c.submit(live()) for _ in range(5)]
        seen = list(events_until_done(c, set(jobs)))
    ends = {e.job: e for e in seen if e.type in ("result", "cancelled", "error")}
    assert ends[jobs[-1]].type == "result", "the newest request must always be delivered"
    results = [e.job for e in seen if e.type == "result"]
    order = {j: i for i, j in enumerate(jobs)}
    # no stale result after a newer one: results arrive in submission order and end with the newest
    assert results == sorted(results, key=order.get) and results[-1] == jobs[-1]
    replaced = [e for e in seen if e.type == "cancelled"]
    assert replaced and all(e.data.get("reason") == "replaced" for e in replaced)
    assert len(results) < len(jobs), "stale work was run instead of replaced"


def test_a_running_stale_job_stops_at_the_next_step(url):
    with Client(url) as c:
        first = c.submit(live(steps=100))
        for event in c.events(timeout=60):
            if event.job == first and event.type == "progress" and event.data["stage"] == "denoise":
                break
        step_at_replace = event.data["step"]
        second = c.submit(live(steps=2))
        seen = list(events_until_done(c, {first, second}))
    first_steps = [e.data["step"] for e in seen if e.job == first and e.type == "progress"]
    assert max(first_steps, default=step_at_replace) - step_at_replace <= 2
    assert [e.type for e in seen if e.job == first][-1] == "cancelled"
    assert [e.type for e in seen if e.job == second][-1] == "result"


def test_replace_leaves_normal_jobs_and_other_clients_alone(url):
    with Client(url) as painter, Client(url) as other:
        normal = painter.submit(GenerateRequest(job=new_job_id(), prompt="x", steps=2, seed=1))
        theirs = other.submit(live(steps=2))
        mine = painter.submit(live(steps=2))
        newer = painter.submit(live(steps=2))
        painter_events = list(events_until_done(painter, {normal, mine, newer}))
        other_events = list(events_until_done(other, {theirs}))
    end = {e.job: e.type for e in painter_events + other_events if e.type in ("result", "cancelled")}
    assert end[normal] == "result" and end[theirs] == "result" and end[newer] == "result"
