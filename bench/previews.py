"""Previews: what a step preview costs, as a share of the step it reports on.

Per step with previews on, the engine maps the latents to RGB (``LatentPreview.render``: one small
matmul, a 2x bilinear upscale) and the server encodes the picture in the client's format before
queueing it (``App._execute.progress``). Both are timed here exactly as the server runs them, on
the 512² latents of the tiny SD (native 512), against the median step interval of a real job at
that size without previews. A tiny model has the cheapest steps there are, so this is the worst
case; a full-size SD step on a CPU is 100x longer. The last row is the whole job through the
server with previews on vs off (plugin client, raw RGBA), measured in turns.
"""

from __future__ import annotations

import time

import numpy as np

from . import fixtures
from .common import Row, check, interleaved, med, paired_ratio

TARGET_SHARE = "<= 5%"


def preview_cost(engine, native: int, fmt: str, repeats: int) -> float:
    """Seconds per step for render + encode, as ``App._execute.progress`` does it."""
    import torch

    from easel.server.codec import encode
    from easel.server.engine.preview import LatentPreview

    pipe = engine.pipeline(None)
    preview = LatentPreview.for_vae(pipe.vae, pipe.vae_scale_factor)
    latents = torch.randn(1, 4, native // 8, native // 8)

    def one() -> None:
        image = preview.render(latents)
        encode(np.asarray(image.convert("RGB")), fmt)

    for _ in range(5):
        one()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        one()
        times.append(time.perf_counter() - t0)
    return med(times)


def step_interval(engine, native: int, steps: int, runs: int) -> float:
    """Median seconds between consecutive denoising steps of a txt2img job without previews."""
    from easel.server.engine import EngineJob

    intervals: list[float] = []
    for _ in range(runs):
        stamps: list[float] = []
        job = EngineJob("txt2img", fixtures.PROMPT, steps=steps, width=native, height=native, preview=False)

        def stamp(p, stamps=stamps) -> None:
            if p.stage == "denoise":
                stamps.append(time.perf_counter())

        engine.run(job, stamp, lambda: False)
        intervals += list(np.diff(stamps))
    return med(intervals)


def run(quick: bool = False) -> list[Row]:
    from easel.client.connection import Client, new_job_id
    from easel.client.protocol import GenerateRequest

    spec = fixtures.tiny_sd(512)
    steps, repeats = (8, 3) if quick else (20, 7)
    engine = fixtures.engine_for(spec)
    rows = []
    step = step_interval(engine, spec.native, steps, 1 if quick else 2)
    for fmt, who in (("rgba", "plugins"), ("png", "protocol default")):
        cost = preview_cost(engine, spec.native, fmt, 30 if quick else 100)
        rows.append(check("previews", f"preview render + {fmt} encode per step / step ({who})", 100 * cost / step,
                          "%", TARGET_SHARE, f"{1000 * cost:.2f} ms per preview, step {1000 * step:.1f} ms "
                          f"({spec.name} at {spec.native}², CFG on)"))
    counts = {True: 0, False: 0}
    with fixtures.serve(engine) as (url, _), Client(url, image_format="rgba", client_name="bench") as client:
        def job(preview: bool) -> None:
            request = GenerateRequest(job=new_job_id(), prompt=fixtures.PROMPT, steps=steps, seed=1,
                                      preview=preview)

            def seen(p) -> None:
                counts[preview] += p.preview is not None

            client.generate(request, on_progress=seen)

        times = interleaved({"off": lambda: job(False), "on": lambda: job(True)}, repeats)
    off, on = med(times["off"]), med(times["on"])
    per_job = counts[True] / (repeats + 1)
    rows.append(Row("previews", f"job with previews / without ({steps} steps, plugin client)",
                    paired_ratio(times["on"], times["off"]), "×",
                    note=f"off {off:.3f} s, on {on:.3f} s, {per_job:.0f} previews per job; a check only: this "
                         "machine's run-to-run noise is larger than the effect (see the rows above)"))
    engine.close()
    return rows
