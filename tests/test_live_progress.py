"""Live painting always makes progress: a raw-protocol client that sends ``replace``
states faster than the server makes frames still gets frames, in order, ending with its last state.

The server is the real App around the demo model with every job slowed by ``FRAME_S`` (job-time
injection, tests/helpers/slow_engine.py), so "faster than the server" holds on any machine: a state every
``FRAME_S / 5`` seconds always outpaces frames that take at least ``FRAME_S``. Torch runs on one
thread here, so the model's own few milliseconds stay small beside ``FRAME_S`` on a busy box, and
the slow rate is measured before and after the fast one, so a drifting load affects both alike.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from easel.client.connection import Client, Event, new_job_id
from easel.client.protocol import GenerateRequest, Image
from easel.server.engine import Engine
from helpers.server_harness import inprocess_server
from helpers.slow_engine import SlowEngine

FRAME_S = 0.1
FAST_FRAMES = 8  #: frames the fast client paints for
SIZE = 64  #: the demo model's native size: one pass per frame


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, object]]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    engine = SlowEngine(Engine(["easel-demo"], device="cpu", dtype="float32"), FRAME_S)
    try:
        with inprocess_server(engine) as (url, app):
            yield url, app
    finally:
        torch.set_num_threads(threads)


class Painter:
    """One raw-protocol live client: ``send`` a new canvas state, ends of jobs collected in order."""

    def __init__(self, url: str):
        self.client = Client(url, image_format="rgba", client_name="test-live-progress", timeout=30)
        self.client.connect()
        self.jobs: list[str] = []
        self.ends: queue.Queue[tuple[float, Event]] = queue.Queue()
        self.canvas = np.full((SIZE, SIZE, 4), 200, np.uint8)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for event in self.client.events():
                if event.type in ("result", "cancelled", "error"):
                    self.ends.put((time.monotonic(), event))
        except Exception:  # closed at the end of the test
            pass

    def send(self) -> str:
        n = len(self.jobs)
        self.canvas[(n * 3) % SIZE, :, :3] = (n * 37) % 256  # a new stroke on the canvas
        request = GenerateRequest(job=new_job_id(), prompt="a red circle", steps=4, strength=0.6, seed=5,
                                  replace=True, preview=False)
        self.jobs.append(self.client.submit(request, Image.rgba(SIZE, SIZE, self.canvas.tobytes())))
        return self.jobs[-1]

    def wait_end(self, job: str, seen: list[tuple[float, Event]], timeout: float = 60.0) -> Event:
        """Collect ends into ``seen`` until ``job`` has ended; returns its end."""
        deadline = time.monotonic() + timeout
        while True:
            for _, event in seen:
                if event.job == job:
                    return event
            seen.append(self.ends.get(timeout=max(0.01, deadline - time.monotonic())))

    def drain(self, seen: list[tuple[float, Event]]) -> None:
        while not self.ends.empty():
            seen.append(self.ends.get_nowait())

    def close(self) -> None:
        self.client.close()


def check_ends(painter: Painter, seen: list[tuple[float, Event]]) -> list[str]:
    """Every job ended exactly once (a result or ``replaced``), results in submission order,
    the last state delivered. Returns the delivered jobs."""
    ends = [event for _, event in seen]
    assert sorted(e.job for e in ends) == sorted(painter.jobs), "every job ends exactly once"
    assert all(e.type == "result" or (e.type == "cancelled" and e.data.get("reason") == "replaced") for e in ends)
    order = {job: i for i, job in enumerate(painter.jobs)}
    results = [e.job for e in ends if e.type == "result"]
    assert [order[j] for j in results] == sorted(order[j] for j in results), "a stale result came after a newer one"
    assert results and results[-1] == painter.jobs[-1], "the last state must get its frame"
    return results


def slowly(painter: Painter, frames: int) -> float:
    """Frames per second when the next state goes out only after the last one's frame (capacity)."""
    seen: list[tuple[float, Event]] = []
    t0 = time.monotonic()
    for _ in range(frames):
        painter.wait_end(painter.send(), seen)
    rate = frames / (time.monotonic() - t0)
    check_ends(painter, seen)
    painter.jobs.clear()
    return rate


def test_sending_faster_than_frames_still_delivers_frames(server):
    url, _ = server
    painter = Painter(url)
    try:
        slowly(painter, 1)  # warm-up; the server learns the frame time
        slow_rates = [slowly(painter, 3)]
        # fast: a state every FRAME_S / 5 until FAST_FRAMES frames came (none, on the old server)
        seen: list[tuple[float, Event]] = []
        start = time.monotonic()
        deadline = start + 100 * FRAME_S + 30
        while sum(e.type == "result" for _, e in seen) < FAST_FRAMES and time.monotonic() < deadline:
            painter.send()
            time.sleep(FRAME_S / 5)
            painter.drain(seen)
        pen_up = time.monotonic()
        painter.wait_end(painter.jobs[-1], seen)
        time.sleep(2 * FRAME_S)  # nothing may follow the last state's frame
        painter.drain(seen)
        results = check_ends(painter, seen)
        jobs, painter.jobs = painter.jobs, []
        slow_rates.append(slowly(painter, 3))
    finally:
        painter.close()
    slow_rate = sum(slow_rates) / 2
    assert len(jobs) >= 5 * FAST_FRAMES, "the client sent several states per frame"
    during = sum(1 for t, e in seen if e.type == "result" and t <= pen_up)
    fast_rate = during / (pen_up - start)
    assert fast_rate >= 0.5 * slow_rate, (during, fast_rate, slow_rate)
    assert len(results) < len(jobs), "stale states were replaced, not all run"


def test_only_a_frame_started_from_idle_is_stopped(server):
    url, app = server
    painter = Painter(url)

    def running(job: str) -> None:
        deadline = time.monotonic() + 30
        while getattr(app.running, "id", None) != job:
            assert time.monotonic() < deadline, f"{job} never ran"
            time.sleep(0.002)

    app.engine.delay = 10 * FRAME_S  # room for two sends while one frame runs, on any machine
    try:
        first = painter.send()  # nothing else live: started from idle, may be restarted
        running(first)
        second = painter.send()  # stops the young first frame; queued behind nothing of ours
        running(second)
        third = painter.send()  # the second frame replaced another: it finishes, the third waits
        fourth = painter.send()  # replaces the waiting third
        seen: list[tuple[float, Event]] = []
        painter.wait_end(fourth, seen)
        painter.drain(seen)
    finally:
        app.engine.delay = FRAME_S
        painter.close()
    ends = {event.job: event for _, event in seen}
    assert ends[first].type == "cancelled" and ends[first].data["reason"] == "replaced"
    assert ends[second].type == "result", "a frame that replaced another must be delivered"
    assert ends[third].type == "cancelled" and ends[third].data["reason"] == "replaced"
    assert ends[fourth].type == "result"
    check_ends(painter, seen)
