"""Live painting's long-lived LiveConnection (server/easel/client/editing/) against a real server with
the tiny model: replacing frames, a server that is down, refused jobs and cancels."""

from __future__ import annotations

import threading
import time

import pytest

from easel.client import editing
from easel.client.connection import Client, new_job_id
from easel.client.editing import LiveConnection, LiveSession, Params
from easel.client.protocol import GenerateRequest, Image
from helpers.probes import wait_until

PLAIN = {"id": "plain", "few_step": False, "default_steps": 20}  # a welcome entry: an ordinary model


@pytest.fixture(scope="module")
def served(tiny_sd_path):
    from easel.server.engine import Engine
    from helpers.server_harness import inprocess_server

    engine = Engine([str(tiny_sd_path)], device="cpu", dtype="float32")
    with inprocess_server(engine) as (u, app):
        yield u, app


@pytest.fixture(scope="module")
def url(served):
    return served[0]


def canvas(step: int, size: int = 64) -> bytes:
    """A grey canvas with a stroke that grows by one dab per step."""
    data = bytearray([128, 128, 128, 255] * size * size)
    for i in range(step + 1):
        x, y = (4 + 3 * i) % (size - 4), 20 + (i % 7)
        for dy in range(4):
            for dx in range(4):
                data[((y + dy) * size + x + dx) * 4 : ((y + dy) * size + x + dx) * 4 + 3] = b"\xd0\x20\x20"
    return bytes(data)


class Painter:
    """What an editor plugin does: poll, hash, ask the session, send through one LiveConnection."""

    def __init__(self, url: str, params: Params):
        self.params = params
        self.session = LiveSession(params.seed)
        self.lock = threading.Lock()
        self.shown: list[tuple[str, object]] = []
        self.ended: list[tuple[str, str, object]] = []
        self.sent: dict[str, bytes] = {}
        self.canvas = canvas(0)
        self.conn = LiveConnection(url, self.on_event, client_name="test-live")

    def on_event(self, kind, job, payload):
        with self.lock:
            self.ended.append((kind, job, payload))
            if kind in ("result", "cancelled", "error") and self.session.finished(job, kind == "result"):
                self.shown.append((job, payload))
        if kind == "result":
            self.poll()  # a frame ended: the newest state may go out now

    def poll(self):
        with self.lock:
            pixels = self.canvas
            self.session.observe(editing.fingerprint(pixels), editing.params_key(self.params))
            if not self.session.due():
                return
            state = editing.EditorState(64, 64, pixels, (0, 0, 64, 64))
            planned = editing.plan_live(state, editing.live_params(self.params, PLAIN, self.session.seed))
            self.session.sent(planned.request.job)
            self.sent[planned.request.job] = pixels
        self.conn.submit(planned)


def test_live_connection_end_to_end_with_replace(url):
    params = Params(prompt="a red stroke", strength=0.6, seed=-1, steps=4)
    painter = Painter(url, params)
    try:
        for step in range(1, 16):  # a stroke: a new dab every 40 ms, polled every 60 ms
            painter.canvas = canvas(step)
            time.sleep(0.04)  # the stroke's pace (part of the scenario): what is asserted holds at any speed
            if step % 3 == 0 or step % 3 == 2:
                painter.poll()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            painter.poll()
            with painter.lock:
                if painter.session.up_to_date:
                    break
            time.sleep(0.05)
    finally:
        painter.conn.close()
    s = painter.session
    assert s.up_to_date, f"never caught up: {painter.ended}"
    jobs = list(painter.sent)
    shown = [job for job, _ in painter.shown]
    assert shown == sorted(shown, key=jobs.index), "an older frame was shown after a newer one"
    assert shown[-1] == jobs[-1] and painter.sent[jobs[-1]] == canvas(15), "the last frame must show the last dab"
    results = [p for k, _, p in painter.ended if k == "result"]
    assert {r.parameters.get("seed", r.images[0].seed) for r in results} == {s.seed}  # one seed for the session
    assert all(r.parameters.get("steps", 4) == 4 for r in results)
    # the frame on show is exactly what a plain request for the final canvas gives
    final = painter.shown[-1][1]
    request = GenerateRequest(job=new_job_id(), prompt=params.prompt, strength=0.6, steps=4, seed=s.seed,
                              canvas_width=64, canvas_height=64)
    with Client(url, image_format="rgba") as client:
        direct = client.generate(request, Image.rgba(64, 64, canvas(15)))
    assert final.images[0].image.data == direct.images[0].image.data


def test_live_connection_reports_a_server_that_is_down():
    events = []
    got = threading.Event()

    def on_event(kind, job, payload):
        events.append((kind, job, payload))
        got.set()

    conn = LiveConnection("ws://127.0.0.1:9", on_event)
    state = editing.EditorState(8, 8, bytes(8 * 8 * 4), (0, 0, 8, 8))
    conn.submit(editing.plan_live(state, Params(prompt="x", strength=0.5)))
    assert got.wait(15)
    conn.close()
    kind, job, message = events[0]
    assert kind == "lost" and job is None and "cannot reach the Easel server" in message


def test_live_connection_reports_refused_jobs_and_cancels(served):
    url, app = served
    events: list = []
    conn = LiveConnection(url, lambda *e: events.append(e))
    state = editing.EditorState(64, 64, canvas(0), (0, 0, 64, 64))
    bad = editing.plan_live(state, Params(prompt="x", strength=0.5, model="no-such-model"))
    conn.submit(bad)
    long = editing.plan_live(state, Params(prompt="x", strength=1.0, steps=150))
    deadline = time.monotonic() + 30
    while not events and time.monotonic() < deadline:
        time.sleep(0.02)
    conn.submit(long)
    assert wait_until(lambda: long.request.job in app.owners, timeout=30, step=0.02)  # sent, so a cancel follows it
    conn.cancel(long.request.job)
    while len(events) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    conn.close()
    assert events[0][0] == "error" and events[0][1] == bad.request.job and "no-such-model" in events[0][2]
    assert events[1][:2] == ("cancelled", long.request.job)
