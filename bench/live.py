"""Live painting: frames per second and stroke-to-result latency at 256x256 (docs/krita.md).

A real ``easel serve`` subprocess serves the demo model (``EASEL_BENCH_LIVE_MODEL`` picks another,
``pick_model``; the row notes say which). A painter thread puts a dab on a 256x256 canvas
every 100 ms for the whole run (one continuous stroke); a poller does what the Krita plugin does
every 150 ms: fingerprint the canvas, ask an ``editing.LiveSession`` whether a frame is due, and
send it through one long-lived ``editing.LiveConnection`` (``replace: true``), polling again at
once when a frame ends. Measured:

- frames shown per second while painting;
- dab-to-frame latency: from a dab landing on the canvas to the first frame shown that contains it
  (median and 90th percentile over every dab);
- pen-up latency: from the last dab to the frame that shows it (the stroke's end);
- the same for the naive policy (every new state sent at once with ``replace``, no pacing).

Then ``bench.live_protocol``'s rows: raw and paced clients at a dab every 5, 20, 50 and 100 ms
against the server's live pacing and against the old server, and, with
``EASEL_BENCH_LIVE_FULLSIZE=1``, a full-size SD-turbo-shaped model in bf16 (``bench.live_fullsize``).
"""

from __future__ import annotations

import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from easel.client import editing
from easel.client.editing import LiveConfig, LiveConnection, LiveSession, Params

from .common import Row
from .fixtures import serve_process, server_threads

SIZE = 256
DAB_S = 0.1
REPO = Path(__file__).resolve().parent.parent


def pick_model(tmp: str) -> tuple[str, str]:
    """(model reference, words for the notes): the demo model when its weights are there.

    ``EASEL_BENCH_LIVE_MODEL`` picks another: ``tiny`` (the tiny test model), ``demo-arch`` (the
    demo model's architecture with untrained weights: the same compute, saved as a diffusers
    folder; the default while the demo weights are missing) or any model reference.
    """
    from easel.server.demo import config as demo_config
    from easel.server.demo import model as demo

    choice = os.environ.get("EASEL_BENCH_LIVE_MODEL", "")
    if not choice and (demo.WEIGHTS_DIR / demo_config.WEIGHTS_NAME).exists():
        return demo.DEMO_ID, f"demo model {demo.DEMO_ID}"
    if choice == "tiny":
        sys.path.insert(0, str(REPO / "tests"))
        from helpers.tiny_models import build_tiny_sd

        return build_tiny_sd(os.path.join(tmp, "tiny-sd")), "tiny test model"
    if choice and choice != "demo-arch":
        return choice, choice
    import torch

    torch.manual_seed(0)
    folder = os.path.join(tmp, "demo-arch")
    demo.assemble(demo_config.build_components(demo_config.default_config())).save_pretrained(folder)
    return folder, "demo model's architecture, untrained weights (demo weights missing)"


@contextmanager
def serve(model: str):
    """``easel serve`` on a free loopback port, as editors use it; yields its URL."""
    cmd = [sys.executable, "-u", "-m", "easel", "serve", "--host", "127.0.0.1", "--port", "0", "--model", model,
           "--output-dir", tempfile.mkdtemp(prefix="easel-bench-live-")]
    with serve_process(cmd, "easel serve", 20) as url:
        yield url


class Canvas:
    """A 256x256 sketch that a painter thread strokes, one 10 px dab every ``DAB_S``."""

    def __init__(self):
        self.pixels = np.full((SIZE, SIZE, 4), 235, np.uint8)
        self.pixels[..., 3] = 255
        self.pixels[96:160, 64:192, :3] = (40, 90, 200)  # something to refine
        self.version, self.painted_at = 0, [time.monotonic()]
        self.lock = threading.Lock()

    def dab(self, i: int) -> None:
        x = 20 + (i * 6) % (SIZE - 40)
        y = 40 + int(60 * np.sin(i / 7)) + 60
        with self.lock:
            self.pixels[y:y + 10, x:x + 10, :3] = (210, 40, 40)
            self.version += 1
            self.painted_at.append(time.monotonic())

    def read(self) -> tuple[int, bytes]:
        with self.lock:
            return self.version, self.pixels.tobytes()


class NaiveSession(LiveSession):
    """Every new state goes out at once (replacing the running frame): no pacing."""

    def due(self, now: float | None = None) -> bool:
        return self.pending


def paint(url: str, seconds: float, naive: bool = False, model: dict | None = None) -> dict:
    config = LiveConfig()
    session = (NaiveSession if naive else LiveSession)(1234, config)
    steps = int(os.environ.get("EASEL_BENCH_LIVE_STEPS", "0")) or None  # the docker's Steps field (1..8)
    params = editing.live_params(Params(prompt="a blue square", strength=0.6, steps=steps), model, session.seed)
    events: queue.Queue = queue.Queue()
    conn = LiveConnection(url, lambda *e: events.put(e), client_name="bench-live")
    canvas, versions, shown, timings = Canvas(), {}, [], []
    stop = threading.Event()

    def painter():
        i = 0
        while not stop.is_set():
            canvas.dab(i)
            i += 1
            stop.wait(DAB_S)

    def poll():
        version, pixels = canvas.read()
        session.observe(editing.fingerprint(pixels), editing.params_key(params))
        if session.due():
            planned = editing.plan_live(editing.EditorState(SIZE, SIZE, pixels, (0, 0, SIZE, SIZE)), params)
            versions[planned.request.job] = version
            session.sent(planned.request.job)
            conn.submit(planned)

    thread = threading.Thread(target=painter, daemon=True)
    start = time.monotonic()
    thread.start()
    next_poll, pen_up, deadline = start, None, start + seconds + 30
    try:
        while time.monotonic() < deadline:
            if pen_up is None and time.monotonic() - start >= seconds:
                stop.set()
                thread.join()
                pen_up = time.monotonic()
            try:
                kind, job, payload = events.get(timeout=max(0.0, next_poll - time.monotonic()))
            except queue.Empty:
                poll()
                next_poll = time.monotonic() + config.poll_s
                continue
            if kind == "lost":
                raise RuntimeError(f"live connection lost: {payload}")
            if session.finished(job, kind == "result"):
                shown.append((time.monotonic(), versions[job]))
                timings.append(payload.timings.get("total_s", 0.0))
            poll()
            next_poll = time.monotonic() + config.poll_s
            if pen_up is not None and session.up_to_date:
                break
    finally:
        stop.set()
        conn.close()
    last = canvas.version
    during = [t for t, _ in shown if t <= pen_up]
    latencies = []
    for v in range(1, last + 1):
        seen = next((t for t, version in shown if version >= v), None)
        if seen is not None:
            latencies.append(seen - canvas.painted_at[v])
    final = next((t for t, version in shown if version == last), None)
    return {"fps": len(during) / (pen_up - start), "frames": len(shown), "dabs": last,
            "latency_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
            "latency_p90_ms": 1000 * float(np.percentile(latencies, 90)) if latencies else float("nan"),
            "pen_up_ms": 1000 * (final - canvas.painted_at[last]) if final else float("nan"),
            "server_ms": 1000 * statistics.median(timings) if timings else float("nan"),
            "sent": session.sent_count, "dropped": session.dropped_count}


def in_krita(url: str, seconds: float) -> dict | None:
    """The same stroke painted inside a real Krita (under Xvfb) with the plugin's Live toggle on,
    driven by the GUI self-test's live part; None when Krita or Xvfb is not installed."""
    import json
    import shutil

    krita, xvfb_bin = shutil.which("krita"), shutil.which("Xvfb")
    if not (krita and xvfb_bin):
        return None
    here = REPO / "tests" / "editors" / "krita"
    sys.path.insert(0, str(here))
    from krita_host import add_test_plugin, krita_env, xvfb

    from easel.plugin_install import install_plugin

    with tempfile.TemporaryDirectory(prefix="easel-bench-krita-") as base:
        home, out = Path(base) / "home", Path(base) / "out"
        out.mkdir()
        pykrita, kritarc = home / ".local" / "share" / "krita" / "pykrita", home / ".config" / "kritarc"
        install_plugin("krita", pykrita, kritarc)
        add_test_plugin(pykrita, kritarc, "easel_selftest")
        live = {"width": SIZE, "height": SIZE, "background_bgra": [235, 235, 235, 255], "sketch_box": [64, 96, 128, 64],
                "sketch_bgra": [200, 90, 40, 255], "stroke_bgra": [40, 40, 210, 255], "stroke": [20, 170, 10],
                "stroke_s": seconds, "dab_s": DAB_S, "timeout": 60, "prompt2": "a red circle",
                "params": dict(prompt="a blue square", negative="", strength=60, steps=0, guidance=None, seed=1234,
                               batch=1)}
        main_doc = {"width": 64, "height": 64, "background_bgra": [255, 255, 255, 255], "sketch_box": [8, 8, 8, 8],
                    "sketch_bgra": [0, 0, 0, 255], "object_names": []}  # the driver's first document, unused here
        (out / "spec.json").write_text(json.dumps({"url": url, "only_live": True, "live": live, **main_doc}))
        with xvfb(xvfb_bin) as display:
            env = krita_env(home, DISPLAY=display, EASEL_URL=url, EASEL_SELFTEST=str(out))
            proc = subprocess.Popen([krita, "--nosplash"], env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
            deadline = time.monotonic() + 240 + seconds
            result: dict = {}
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.5)
                try:
                    result = json.loads((out / "result.json").read_text())
                except (OSError, ValueError):
                    continue
                if "error" in result or "off" in result.get("live", {}):
                    break
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(10)
    record = result.get("live", {})
    if "stroke" not in record:
        raise RuntimeError(f"the live run in Krita did not finish: {result.get('error') or record}")
    return record["stroke"]


def run(quick: bool = False) -> list[Row]:
    seconds = 4.0 if quick else 10.0
    with tempfile.TemporaryDirectory() as tmp:
        ref, words = pick_model(tmp)
        with serve(ref) as url:
            from easel.client.connection import Client

            with Client(url) as client:
                model = editing.find_model(client.welcome, None)
            paint(url, 2.0, model=model)  # warm-up: the first frames load and compile
            paced = paint(url, seconds, model=model)
            naive = paint(url, seconds, naive=True, model=model)
            krita = None if quick else in_krita(url, seconds)
    steps = editing.live_steps(model, int(os.environ.get("EASEL_BENCH_LIVE_STEPS", "0")) or None)
    note = (f"{words}, {SIZE}x{SIZE}, {steps} steps at strength 0.6, a dab every {int(1000 * DAB_S)} ms, "
            f"server on {server_threads()} thread(s)")
    rows = [
        Row("live", "frames/s while painting (paced, as the plugin)", paced["fps"], "1/s", ">= 4", paced["fps"] >= 4,
            f"{note}; {paced['frames']} frames for {paced['dabs']} dabs, {paced['dropped']} restarted"),
        Row("live", "dab-to-frame latency, median (paced)", paced["latency_ms"], "ms", note=note),
        Row("live", "dab-to-frame latency, 90th percentile (paced)", paced["latency_p90_ms"], "ms", note=note),
        Row("live", "pen-up to final frame (paced)", paced["pen_up_ms"], "ms", note=note),
        Row("live", "server time per frame (median)", paced["server_ms"], "ms", note=note),
        Row("live", "frames/s while painting (naive: every state replaces)", naive["fps"], "1/s",
            note=f"{naive['frames']} frames for {naive['dabs']} dabs, {naive['dropped']} replaced, "
                 f"server {naive['server_ms']:.0f} ms/frame"),
        Row("live", "dab-to-frame latency, median (naive)", naive["latency_ms"], "ms"),
        Row("live", "pen-up to final frame (naive)", naive["pen_up_ms"], "ms"),
    ]
    if krita is not None:
        knote = f"{note}; inside Krita 5 under Xvfb, the docker's Live toggle, strokes by setPixelData"
        latencies = krita["frame_latencies_ms"]
        rows += [
            Row("live", "in Krita: frames/s while painting", krita["fps_during"], "1/s", ">= 4",
                krita["fps_during"] >= 4, f"{knote}; {krita['frames_during']} frames for {krita['dabs']} dabs"),
            Row("live", "in Krita: change seen to frame shown, median", statistics.median(latencies)
                if latencies else float("nan"), "ms", note="the plugin's own figure; add up to one poll (150 ms)"),
            Row("live", "in Krita: pen-up to final frame on the canvas", 1000 * krita["pen_up_to_final_s"], "ms",
                note="includes the poll interval and the driver's 20 ms sampling"),
        ]
    return rows + protocol_rows(quick)


def protocol_rows(quick: bool) -> list[Row]:
    """``bench.live_protocol``'s input-rate sweep; the full-size rows only when asked for (minutes)."""
    from .live_protocol import demo_rows

    rows = demo_rows(quick)
    if os.environ.get("EASEL_BENCH_LIVE_FULLSIZE") == "1":
        from .live_fullsize import fullsize_rows

        return rows + fullsize_rows()
    return rows + [Row("live", "SD-turbo-shaped bf16 live rows (bench.live_fullsize)", None, "",
                       note="skipped: set EASEL_BENCH_LIVE_FULLSIZE=1 (minutes on a CPU)")]


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        value = "skipped" if row.value is None else f"{row.value:9.1f}"
        print(f"{row.name:<56} {value:>9} {row.unit:<4} {row.note}")
