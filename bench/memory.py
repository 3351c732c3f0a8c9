"""Memory: resident memory after txt2img, then img2img, then inpaint on one model (one Engine).

Runs in fresh child processes (``python -m bench.memory MODEL NATIVE STEPS [trim]``) so that the
other sections' allocations do not count; jobs run on one worker thread, as in the server. The
three modes share one set of weights (``from_pipe``); what a mode switch can add is the new pipeline
objects and the activations of the VAE encoder, which txt2img never runs. Each mode runs twice; RSS
is read after the second run. A second child calls glibc's ``malloc_trim(0)`` after every job: what
is left then is live memory, the rest is freed memory the allocator keeps (activations).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from . import fixtures
from .common import Row, check

TARGET = "<= 5%"


def measure(ref: str, native: int, steps: int, trim: bool = False, runs: int = 2) -> dict[str, float]:
    """In this process: RSS (MiB) after import, load and each mode; runs the jobs through the Engine."""
    import ctypes
    import gc
    import time
    from concurrent.futures import ThreadPoolExecutor

    import torch
    from PIL import Image as PILImage

    from easel.server.engine import Engine, EngineJob

    from .common import peak_rss_mb, rss_mb

    torch.set_num_threads(int(os.environ.get("EASEL_BENCH_THREADS", "1")))
    out = {"imported": rss_mb()}
    engine = Engine([ref], device="cpu", dtype="float32")
    engine.load(None)
    out["loaded"] = rss_mb()
    image = PILImage.fromarray(fixtures.canvas(native)[..., :3])
    mask = PILImage.fromarray(fixtures.square_mask(native, native * 3 // 4))
    jobs = {"txt2img": {}, "img2img": {"image": image, "strength": 0.6}, "inpaint": {"image": image, "mask": mask}}
    worker = ThreadPoolExecutor(1)
    libc = ctypes.CDLL("libc.so.6") if trim else None
    trims = []
    for mode, extra in jobs.items():
        for _ in range(runs):
            job = EngineJob(mode, fixtures.PROMPT, steps=steps, width=native, height=native, **extra)
            worker.submit(engine.run, job, lambda p: None, lambda: False).result()
            gc.collect()
            if libc is not None:
                t0 = time.perf_counter()
                libc.malloc_trim(0)
                trims.append(time.perf_counter() - t0)
        out[mode] = rss_mb()
    out["peak"] = peak_rss_mb()
    out["trim_ms"] = 1000 * sorted(trims)[len(trims) // 2] if trims else 0.0
    return out


def child(spec: fixtures.ModelSpec, steps: int, trim: bool = False) -> dict[str, float]:
    cmd = [sys.executable, "-m", "bench.memory", spec.ref, str(spec.native), str(steps), *(["trim"] if trim else [])]
    proc = subprocess.run(cmd, cwd=fixtures.REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"memory child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> list[Row]:
    specs = [fixtures.tiny_sd(512)]
    demo = fixtures.demo_spec()
    rows = []
    if demo is None:
        rows.append(Row("memory", "easel-demo", None, "", note=fixtures.DEMO_MISSING))
    else:
        specs.append(demo)
    for spec in specs:
        m = child(spec, 4 if quick else 8)
        t = None if quick else child(spec, 8, trim=True)
        base = m["txt2img"]
        tag = f"{spec.name} {spec.native}²"
        rows.append(Row("memory", f"{tag}: RSS after load", m["loaded"], "MiB",
                        note=f"{m['imported']:.0f} MiB after importing torch + diffusers"))
        rows.append(Row("memory", f"{tag}: RSS after txt2img", base, "MiB"))
        rows.append(Row("memory", f"{tag}: RSS after img2img", m["img2img"], "MiB",
                        note=f"{100 * (m['img2img'] / base - 1):+.1f}%"))
        rows.append(Row("memory", f"{tag}: RSS after inpaint", m["inpaint"], "MiB",
                        note=f"{100 * (m['inpaint'] / base - 1):+.1f}%; peak {m['peak']:.0f} MiB"))
        rows.append(check("memory", f"{tag}: the two mode switches add", 100 * (m["inpaint"] / base - 1), "%",
                          TARGET, f"+{m['inpaint'] - base:.0f} MiB over txt2img"))
        if t is None:
            continue
        rows.append(check("memory", f"{tag}: the same with malloc_trim after each job", 100 * (t["inpaint"] / t["txt2img"] - 1),
                          "%", TARGET, f"RSS {t['txt2img']:.0f} -> {t['img2img']:.0f} -> {t['inpaint']:.0f} MiB; "
                          f"malloc_trim takes {t['trim_ms']:.1f} ms"))
    return rows


if __name__ == "__main__":
    fixtures.quiet()
    print(json.dumps(measure(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), trim=sys.argv[4:] == ["trim"])))
