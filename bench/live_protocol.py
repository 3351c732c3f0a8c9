"""Live painting at the protocol level, at any input rate (docs/krita.md#live-speed).

A client paints one continuous stroke on a square canvas, one dab every 5, 20, 50 or 100 ms, and
sends live frames (``replace: true`` img2img, the whole canvas, raw RGBA) over one connection to a
server in its own process (``serve``: the real ``App`` around an ``Engine``, as ``easel serve``).
Two clients:

- **raw**: every new state goes out at once (a GIMP plug-in, a script, a third-party client);
- **paced**: the Krita plugin's pacing, ``editing.LiveSession``, decides (observed at every dab,
  asked again whenever a frame ends; the plugin's 150 ms canvas poll is not part of this).

Measured per run: frames delivered per second while painting, dab-to-frame latency (from a dab
to the first frame shown that contains it; median and 90th percentile over every dab), pen-up to
final frame (from the last dab to the frame that shows it) and whether results came in order.
``restart`` picks the server's ``LivePacing`` (``inf``: the old server, where every newer state
stopped the running frame).

``python -m bench.live_protocol`` prints the demo-model table; ``--fullsize`` the SD-turbo-shaped
rows (``bench.live_fullsize``); ``--restart 0 0.25 inf`` compares server policies.
"""

from __future__ import annotations

import argparse
import math
import queue
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from easel.client import editing
from easel.client.editing import LiveConfig, LiveSession, Params

from .common import Row
from .fixtures import serve_process, server_threads

INTERVALS_MS = (5, 20, 50, 100)


@contextmanager
def serve(model: str, dtype: str = "float32", restart: float | None = None) -> Iterator[str]:
    """A server in its own process (``--serve`` below) on a free loopback port; yields its URL."""
    cmd = [sys.executable, "-u", "-m", "bench.live_protocol", "--serve", model, "--dtype", dtype]
    if restart is not None:
        cmd += ["--restart", str(restart)]
    with serve_process(cmd, "the bench server", 30) as url:
        yield url


def _serve_main(model: str, dtype: str, restart: float | None) -> None:
    import asyncio

    import torch

    from easel.server.app import App
    from easel.server.engine import Engine
    from easel.server.results import ResultStore

    torch.set_num_threads(int(server_threads()))
    engine = Engine([model], device="cpu", dtype=dtype)
    engine.load(None)
    kwargs = {} if restart is None else {"live_restart": restart}

    async def main() -> None:
        app = App(engine, store=ResultStore(tempfile.mkdtemp(prefix="easel-bench-live-")), **kwargs)
        await app.start("127.0.0.1", 0)
        print(f"serving on ws://127.0.0.1:{app.port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


class Canvas:
    """A ``size``² sketch; ``dab`` puts one stroke dab on it and counts a new version."""

    def __init__(self, size: int):
        self.size = size
        self.pixels = np.full((size, size, 4), 235, np.uint8)
        self.pixels[..., 3] = 255
        s = size // 256
        self.pixels[96 * s:160 * s, 64 * s:192 * s, :3] = (40, 90, 200)  # something to refine
        self.version, self.painted_at = 0, [time.monotonic()]

    def dab(self, i: int) -> None:
        s = self.size / 256
        x, y = int(s * (20 + (i * 3) % 216)), int(s * (100 + 60 * math.sin(i / 11)))
        r = max(5, int(5 * s))
        self.pixels[y:y + r, x:x + r, :3] = (210, 40, 40)
        self.version += 1
        self.painted_at.append(time.monotonic())


@dataclass
class Stroke:
    """What one painted stroke measured."""

    interval_ms: float
    paced: bool
    dabs: int = 0
    sent: int = 0
    shown: list[tuple[float, int]] = field(default_factory=list)  # (when, canvas version) per frame shown
    results: list[int] = field(default_factory=list)  # canvas version of every result, in arrival order
    server_s: list[float] = field(default_factory=list)
    painting_s: float = 0.0  # first to last dab
    painting_end: float = 0.0  # when the last dab landed
    latencies: list[float] = field(default_factory=list)
    pen_up_s: float = math.nan
    work: str = ""  # the size the server ran a frame at (and its second pass, if any)

    @property
    def fps(self) -> float:
        return sum(1 for t, _ in self.shown if t <= self.painting_end) / max(self.painting_s, 1e-9)

    @property
    def in_order(self) -> bool:
        return all(a < b for a, b in zip(self.results, self.results[1:], strict=False))

    def latency_ms(self, q: float) -> float:
        return 1000 * float(np.percentile(self.latencies, q)) if self.latencies else math.nan


def stroke(url: str, model: dict | None, interval: float, seconds: float, paced: bool, size: int = 256,
           wait_s: float = 30.0) -> Stroke:
    """Paint for ``seconds`` (a dab every ``interval`` s), then wait up to ``wait_s`` for the final frame."""
    from easel.client.connection import Client

    out = Stroke(1000 * interval, paced)
    session = LiveSession(1234, LiveConfig())
    params = editing.live_params(Params(prompt="a blue square", strength=0.6), model, session.seed)
    events: queue.Queue = queue.Queue()
    client = Client(url, image_format="rgba", client_name="bench-live-protocol", timeout=60)
    client.connect()

    def read() -> None:
        try:
            for event in client.events():
                if event.type in ("result", "cancelled", "error"):
                    events.put((time.monotonic(), event))
        except Exception:  # the connection closed at the end
            pass

    threading.Thread(target=read, daemon=True).start()
    canvas, versions = Canvas(size), {}

    def send() -> None:
        planned = editing.plan_live(editing.EditorState(size, size, canvas.pixels.tobytes(), (0, 0, size, size)),
                                    params)
        versions[planned.request.job] = canvas.version
        if paced:
            session.sent(planned.request.job)
        client.submit(planned.request, planned.image, planned.mask)
        out.sent += 1

    start = time.monotonic()
    next_dab, pen_up, deadline = start, start + seconds, math.inf
    try:
        while time.monotonic() < deadline:
            now = time.monotonic()
            if next_dab < pen_up and now >= next_dab:
                canvas.dab(canvas.version)
                next_dab += interval
                if not paced:
                    send()
                else:
                    session.observe(str(canvas.version), "params")
                    if session.due():
                        send()
                if next_dab >= pen_up:
                    deadline = time.monotonic() + wait_s
            try:
                t, event = events.get(timeout=max(0.0, min(next_dab, deadline) - time.monotonic()))
            except queue.Empty:
                continue
            if event.job not in versions:
                continue
            delivered = event.type == "result"
            if delivered:
                out.results.append(versions[event.job])
                out.server_s.append(event.data.get("timings", {}).get("total_s", math.nan))
                out.work = work_of(event.data.get("parameters", {}))
            if (session.finished(event.job, delivered) if paced else delivered):
                out.shown.append((t, versions[event.job]))
            if paced and session.due():
                send()
            if next_dab >= pen_up and out.shown and out.shown[-1][1] == canvas.version:
                break  # the final state is on show
    finally:
        client.close()
    out.dabs, last = canvas.version, canvas.version
    out.painting_end = canvas.painted_at[last]
    out.painting_s = out.painting_end - start
    for v in range(1, last + 1):
        seen = next((t for t, version in out.shown if version >= v), None)
        if seen is not None:
            out.latencies.append(seen - canvas.painted_at[v])
    final = next((t for t, version in out.shown if version == last), None)
    out.pen_up_s = final - canvas.painted_at[last] if final is not None else math.nan
    return out


def work_of(parameters: dict) -> str:
    """``"512x512"`` (or ``"512x512 + second pass"``) from a result's parameters."""
    size = "x".join(str(v) for v in parameters.get("work_size", [])) or "?"
    return size + (" + second pass" if parameters.get("second_pass") else "")


def rows_for(runs: list[Stroke], label: str, note: str) -> list[Row]:
    """One row per measure and run: frames/s, latency median/p90, pen-up → final frame."""
    rows = []
    for r in runs:
        who = f"{label}, {'paced' if r.paced else 'raw'}, a dab every {r.interval_ms:g} ms"
        server = statistics.median(r.server_s) * 1000 if r.server_s else math.nan
        detail = (f"{note}; {len(r.shown)} frames for {r.dabs} dabs ({r.sent} sent), server {server:.0f} ms/frame "
                  f"at {r.work}, so {r.fps * server / 10:.0f}% of the server's capacity"
                  + ("" if r.in_order else "; RESULTS OUT OF ORDER"))
        rows += [Row("live", f"{who}: frames/s while painting", r.fps, "1/s", note=detail),
                 Row("live", f"{who}: dab-to-frame latency, median", r.latency_ms(50), "ms"),
                 Row("live", f"{who}: dab-to-frame latency, 90th percentile", r.latency_ms(90), "ms"),
                 Row("live", f"{who}: pen-up to final frame", 1000 * r.pen_up_s, "ms")]
    return rows


def welcome_model(url: str) -> dict | None:
    from easel.client.connection import Client

    with Client(url, timeout=120) as client:
        return editing.find_model(client.welcome, None)


def demo_rows(quick: bool = False, restart: float | None = None, label: str = "", old: bool = True) -> list[Row]:
    """The sweep on the demo model at 256² (``bench.live.pick_model``'s choice), one server thread;
    with ``old``, also the raw client against the old server (every newer state stops the frame)."""
    from .live import pick_model

    seconds = 2.0 if quick else 4.0
    with tempfile.TemporaryDirectory() as tmp:
        ref, words = pick_model(tmp)
        with serve(ref, restart=restart) as url, serve(ref, restart=math.inf) as old_url:
            model = welcome_model(url)
            stroke(url, model, 0.02, 1.0, False)  # warm-up
            runs, old_runs = [], []
            for i, ms in enumerate(INTERVALS_MS):  # in turns, so a drifting load touches all alike
                for who in ("raw", "paced", "old") if i % 2 == 0 else ("old", "paced", "raw"):
                    if who == "old" and old:
                        if not old_runs:
                            stroke(old_url, model, 0.02, 1.0, False)  # warm-up
                        old_runs.append(stroke(old_url, model, ms / 1000, seconds, False))
                    elif who != "old":
                        runs.append(stroke(url, model, ms / 1000, seconds, who == "paced"))
    steps = editing.live_steps(model)
    policy = "" if restart is None else f", server restart {restart:g}"
    note = (f"{words}, 256x256 canvas, {steps} steps at strength 0.6, {seconds:g} s of input, server on "
            f"{server_threads()} thread(s){policy}")
    runs.sort(key=lambda r: (r.paced, r.interval_ms))
    return (rows_for(runs, label or "protocol", note)
            + rows_for(old_runs, "old server", note + "; old server: every newer state stops the running frame"))


def print_rows(rows: list[Row]) -> None:
    for row in rows:
        print(f"{row.name:<78} {row.value:>8.1f} {row.unit:<4} {row.note}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.live_protocol", description=__doc__.split("\n")[0])
    parser.add_argument("--serve", metavar="MODEL", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--restart", type=float, nargs="*", help="server LivePacing restart share(s) to compare")
    parser.add_argument("--fullsize", action="store_true", help="SD-turbo-shaped rows (bench.live_fullsize)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.serve:
        _serve_main(args.serve, args.dtype, args.restart[0] if args.restart else None)
        return
    if args.fullsize:
        from .live_fullsize import fullsize_rows

        print_rows(fullsize_rows())
        return
    for restart in args.restart or [None]:
        label = "" if restart is None else f"restart {restart:g}"
        print_rows(demo_rows(args.quick, restart, label=label, old=not args.restart))


if __name__ == "__main__":
    main()
