"""Abandoned jobs (docs/protocol.md): what a client that leaves still holds, and cancel in every state.

Real servers on 127.0.0.1 (tests/helpers/server_harness.py) around the tiny SD model. A gated engine keeps a
job running until the test opens the gate, so nothing here depends on how fast this machine is.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from easel.client.connection import Client, JobFailed, new_job_id
from easel.client.protocol import GenerateRequest
from easel.server import workers
from easel.server.engine import Engine
from easel.server.engine.types import JobCancelled as EngineCancelled
from easel.server.results import ResultStore
from helpers.pictures import pixels
from helpers.probes import wait_until
from helpers.server_harness import inprocess_server


class GatedEngine:
    """Wraps an ``Engine``: ``run`` waits until ``gate`` is set, honouring ``cancelled()`` every 10 ms."""

    def __init__(self, engine: Any):
        self._engine, self.gate = engine, threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def run(self, job: Any, progress: Any, cancelled: Any) -> Any:
        while not self.gate.wait(0.01):
            if cancelled():
                raise EngineCancelled()
        return self._engine.run(job, progress, cancelled)


@pytest.fixture(scope="module")
def engine(tiny_sd_path):
    return Engine([str(tiny_sd_path)], device="cpu", dtype="float32")


def req(**kw) -> GenerateRequest:
    kw.setdefault("prompt", "a blue square")
    kw.setdefault("steps", 2)
    kw.setdefault("seed", 3)
    return GenerateRequest(job=new_job_id(), **kw)


def drop(client: Client) -> None:
    """Shut ``client``'s socket without a websocket close: a crashed editor, a pulled cable."""
    ws, client._ws = client._ws, None
    ws.close_socket()


def acknowledged(client: Client, jobs: list[str]) -> None:
    """Read ``client``'s events until each of ``jobs`` got ``queued``."""
    waiting = set(jobs)
    for event in client.events(timeout=30):
        if event.type == "queued":
            waiting.discard(event.job)
        if not waiting:
            return


@pytest.mark.parametrize("kept", ["live frame", "no result store"])
def test_a_gone_clients_job_nobody_can_fetch_stops_at_its_next_step(engine, tmp_path, kept):
    gated = GatedEngine(engine)
    store = ResultStore(tmp_path) if kept == "live frame" else None
    with inprocess_server(gated, store=store) as (url, app):
        leaver = Client(url)
        leaver.connect()
        job = leaver.submit(req(replace=kept == "live frame"))
        assert wait_until(lambda: app.running_job(job) is not None, 30)
        drop(leaver)
        assert wait_until(lambda: not app.running_jobs(), 30), "a job nobody can fetch still holds the worker"
        gated.gate.set()
        with Client(url) as other:
            assert other.generate(req(seed=4)).images[0].seed == 4  # the worker serves the next client
        assert store is None or job not in store.jobs()


def test_a_gone_client_never_starts_a_job_and_its_running_one_is_kept(engine, tmp_path):
    gated = GatedEngine(engine)
    with inprocess_server(gated, store=ResultStore(tmp_path)) as (url, app):
        leaver = Client(url, image_format="rgba")
        leaver.connect()
        running = leaver.submit(req(seed=21))
        assert wait_until(lambda: app.running_job(running) is not None, 30)
        queued = [leaver.submit(req(seed=s)) for s in (1, 2)]
        acknowledged(leaver, queued)
        with Client(url, image_format="rgba") as stayer:
            theirs = stayer.submit(req(seed=5))
            acknowledged(stayer, [theirs])
            drop(leaver)
            assert wait_until(lambda: not any(j in app.queue for j in queued), 30)
            assert theirs in app.queue  # next after the running job: nothing of the gone client before it
            gated.gate.set()
            assert stayer.wait_for(theirs).images[0].seed == 5
        with Client(url, image_format="rgba") as back:
            back.send({"type": "fetch", "job": running})
            fetched = back.wait_for(running, reported=("progress",))
            assert [(i.seed, i.image.width, i.image.height) for i in fetched.images] == [(21, 64, 64)]
            again = back.generate(req(seed=21))
            assert np.array_equal(pixels(fetched.images[0].image), pixels(again.images[0].image))
            for job in queued:
                back.send({"type": "fetch", "job": job})
                with pytest.raises(JobFailed) as failed:
                    back.wait_for(job)
                assert failed.value.code == "not_found" and "(unknown)" in str(failed.value)
        assert running in app.store.jobs() and not set(queued) & set(app.store.jobs())


def test_cancel_while_another_worker_loads_a_model(tiny_sd_path):
    """Loads run one at a time (workers.LOADING); a job waiting for its turn to load still obeys cancel."""
    with inprocess_server(Engine([str(tiny_sd_path)], device="cpu", dtype="float32")) as (url, app):
        with workers.LOADING, Client(url) as client:  # another worker's load holds the lock
            job = client.submit(req())
            assert wait_until(lambda: app.running_job(job) is not None, 30)
            client.cancel(job)
            ends = (e.type for e in client.events(timeout=30) if e.job == job and e.type != "queued")
            assert next(ends) == "cancelled"  # before: nothing until the other load ended
        assert wait_until(lambda: not app.running_jobs(), 30)


def test_a_gone_clients_kept_job_yields_to_waiting_work_after_the_grace(engine, tmp_path):
    """A client that died (no cancel, never back) holds the worker at most ``orphan_grace`` once others wait."""
    gated = GatedEngine(engine)  # the gone client's job would run forever: only the grace ends it
    with inprocess_server(gated, store=ResultStore(tmp_path), orphan_grace=0.5) as (url, app):
        leaver = Client(url)
        leaver.connect()
        orphan = leaver.submit(req(seed=21))
        assert wait_until(lambda: app.running_job(orphan) is not None, 30)
        with Client(url, image_format="rgba") as stayer:
            theirs = stayer.submit(req(seed=5))
            acknowledged(stayer, [theirs])
            drop(leaver)
            assert wait_until(lambda: app.running_job(orphan) is None, 30), "the orphan still holds the worker"
            gated.gate.set()
            assert stayer.wait_for(theirs).images[0].seed == 5
        assert orphan not in app.store.jobs()


def test_a_kept_job_goes_on_while_nobody_waits_and_when_its_client_comes_back(engine, tmp_path):
    import time

    gated = GatedEngine(engine)
    with inprocess_server(gated, store=ResultStore(tmp_path), orphan_grace=0.2) as (url, app):
        leaver = Client(url, image_format="rgba")
        leaver.connect()
        job = leaver.submit(req(seed=21))
        assert wait_until(lambda: app.running_job(job) is not None, 30)
        drop(leaver)
        gone = time.monotonic()
        wait_until(lambda: time.monotonic() > gone + 1.5, 30)  # past the grace and one recheck, nobody waiting
        assert app.running_job(job) is not None
        with Client(url, image_format="rgba") as back, Client(url) as other:
            back.send({"type": "fetch", "job": job})  # the editor reconnected: the job is its again
            assert next(e for e in back.events(timeout=30) if e.job == job).data.get("state") == "running"
            theirs = other.submit(req(seed=4))
            acknowledged(other, [theirs])
            taken = time.monotonic()
            wait_until(lambda: time.monotonic() > taken + 1.5, 30)  # others wait now, but it has an owner
            assert app.running_job(job) is not None
            gated.gate.set()
            assert [i.seed for i in back.wait_for(job).images] == [21]
            assert other.wait_for(theirs).images[0].seed == 4
