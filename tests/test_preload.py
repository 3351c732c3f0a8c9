"""The default model loads while the server already listens (the cold start, workers.Preload).

A real Engine on the tiny SD behind the real App: the preload's own progress callback (the start-up display
in ``easel serve``) holds the load at its first report until the test lets it go, so a job sent meanwhile
is seen waiting for the load — shown the load's progress — and finishing once it ends.
"""

from __future__ import annotations

import threading
import time

import pytest

from easel.client.connection import Client, JobCancelled
from easel.server.engine import Engine
from helpers.scale_checks import req
from helpers.server_harness import inprocess_server, running_server

DEADLINE_S = 120


@pytest.fixture()
def held_preload(tiny_sd_path):
    engine = Engine([str(tiny_sd_path)], device="cpu", dtype="float32")
    release, started = threading.Event(), threading.Event()

    def startup_display(p) -> None:
        started.set()
        release.wait(DEADLINE_S)

    with inprocess_server(engine) as (url, app):
        load = app.workers[0].preload(None, startup_display)
        assert started.wait(DEADLINE_S), "the preload never reported"
        yield url, engine, load, release
        release.set()
    engine.close()


def test_a_job_sent_while_the_model_loads_waits_with_the_load_progress(held_preload):
    url, engine, load, release = held_preload
    seen: list = []
    out: dict = {}

    def send() -> None:
        with Client(url) as client:
            out["welcome"] = client.welcome
            out["result"] = client.generate(req(), on_progress=seen.append)

    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + DEADLINE_S
    while not any(p.stage == "load" for p in seen) and time.monotonic() < deadline:
        time.sleep(0.02)  # polled: the job must show the load it waits for
    assert any(p.stage == "load" for p in seen), "the waiting job was not shown the load"
    assert not load.done and "result" not in out, "the job waits for the preload"
    release.set()
    sender.join(DEADLINE_S)
    assert out["welcome"]["models"] and [r.seed for r in out["result"].images] == [3]
    assert engine.load_count == 1, "the job used the preloaded model, no second load"
    assert load.error is None


def test_a_job_waiting_for_the_load_can_be_cancelled(held_preload):
    url, engine, load, release = held_preload
    with Client(url) as client:
        job = client.submit(req())
        client.cancel(job)
        with pytest.raises(JobCancelled):
            client.wait_for(job)
    assert not load.done, "cancelled while the model was still loading"
    release.set()
    with Client(url) as client:
        assert client.generate(req()).images


def test_easel_serve_listens_then_says_when_the_model_is_loaded(tiny_sd_path, tmp_path):
    log = tmp_path / "serve.log"
    with running_server([str(tiny_sd_path)], "--output-dir", str(tmp_path / "out"), log_path=log) as url:
        deadline = time.monotonic() + DEADLINE_S
        while "the default model is loaded" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        with Client(url) as client:
            assert client.generate(req()).images
    text = log.read_text()
    assert "serving on ws://" in text and "the default model is loaded: ready for jobs" in text
