"""Live painting with a full-size SD-turbo-shaped model in bf16 on the CPU (bench.live_protocol's rows).

The model is ``bench.gpu``'s SD-turbo-shaped pipeline (the SD 2.1 UNet: 320-640-1280-1280, linear
projections, 1024-d cross-attention; a 23-layer OpenCLIP-H-sized text encoder; the SD VAE; trailing
Euler-ancestral), built in code with random weights (nothing is downloaded), saved in fp16 and served
in bfloat16 on the CPU. Its live frame is one step of img2img at strength 0.6 (the engine runs 2
scheduler steps for 1 denoising step) at its native 512² work size, so a frame takes seconds here.
Each run is therefore bounded: a dab every ``INTERVAL_MS`` for ``seconds`` of input, then the wait
for the final frame; raw, paced, and raw against the old server, on 256² and 512² canvases.

Off by default in ``python -m bench`` (minutes on a 2-core CPU): ``EASEL_BENCH_LIVE_FULLSIZE=1``
adds the rows to the ``live`` section; ``python -m bench.live_protocol --fullsize`` prints them.
The notes carry the machine load (``/proc/loadavg`` before and after) and the CPU's bf16 flags.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from . import fixtures
from .common import Row, bf16_flags, loadavg
from .fixtures import server_threads
from .live_protocol import rows_for, serve, stroke, welcome_model

INTERVAL_MS = 20  #: a tablet's pace
SIZES = (256, 512)


def build_model() -> str:
    """The SD-turbo-shaped model folder (``EASEL_BENCH_LIVE_FULLSIZE_MODEL`` reuses a saved one)."""
    saved = os.environ.get("EASEL_BENCH_LIVE_FULLSIZE_MODEL")
    if saved:
        return saved
    from .gpu import build

    return build(Path(fixtures.tmpdir("live-fullsize")) / "sd-turbo-shaped", turbo=True, device="cpu")


def fullsize_rows(seconds: float | None = None) -> list[Row]:
    """Raw, paced and old-server raw strokes on 256² and 512² canvases; one warm-up frame per server."""
    seconds = seconds or float(os.environ.get("EASEL_BENCH_LIVE_FULLSIZE_S", "4"))
    folder = build_model()
    before = loadavg()
    rows: list[Row] = []
    with serve(folder, "bfloat16") as url, serve(folder, "bfloat16", restart=math.inf) as old_url:
        model = welcome_model(url)
        for u in (url, old_url):
            stroke(u, model, INTERVAL_MS / 1000, 0.01, False, 256, wait_s=600)  # warm-up: one frame
        for size in SIZES:
            runs = [stroke(url, model, INTERVAL_MS / 1000, seconds, paced, size, wait_s=600)
                    for paced in (False, True)]
            old = stroke(old_url, model, INTERVAL_MS / 1000, seconds, False, size, wait_s=600)
            note = (f"SD-turbo-shaped random weights, bfloat16 on the CPU ({bf16_flags()}), {size}x{size} canvas, "
                    f"1 step at strength 0.6, {seconds:g} s of input, server on {server_threads()} thread(s); "
                    f"load {before} before, {loadavg()} after")
            rows += rows_for(runs, f"SD-turbo-shaped {size}²", note)
            rows += rows_for([old], f"SD-turbo-shaped {size}², old server", note)
    return rows
