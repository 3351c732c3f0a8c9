"""The second pass and exact size (docs/imaging.md): time and detail, and a full-size SD1.5.

Rows:

* per model (the built-in ``easel-demo`` and the tests' tiny SD, both native 64²): a ``SIZE``² text to
  image layer with ``hires: off`` (one pass at the native area, resampled up) and ``hires: auto``
  (a second pass refining the upscale in native tiles): seconds each, the time ratio, and the mean
  absolute Laplacian of the luma of each layer (``imaging.metrics.detail``) with their ratio. 2048²
  on a 64² model is 43 x 43 tiles; ``--quick`` uses 512².
* full-size SD1.5-shaped random weights (``bench.gpu.build``: UNet 320-640-1280-1280, CLIP-L, SD VAE)
  in bfloat16 on the CPU: a 256² text to image with ``exact_size`` (runs at 256²) and by default (runs
  at the 512² native area, scaled down), against raw diffusers at 256², the same steps and guidance
  (exact and raw in turns, so load that drifts hits both).
  Minutes on a 2-core CPU, so opt-in: ``EASEL_BENCH_HIRES_FULLSIZE=1`` (or
  ``python -m bench.hires --fullsize``). The notes carry the machine load and the CPU's bf16 flags.

All runs go through ``generation.run_generation`` on an in-process ``Engine`` (no websocket; the
overhead section measures that) with one torch thread unless ``--threads`` says otherwise.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from . import fixtures
from .common import Row, bf16_flags, check, interleaved, loadavg, med, paired_ratio

SIZE, QUICK_SIZE = 2048, 512
STEPS = 10  # per pass; the second pass runs int(10 x 0.5) = 5 per tile
FULL_SIZE, FULL_STEPS = 256, 4


def generate(engine: Any, size: int, steps: int, guidance: float | None = None, **fields: Any) -> tuple[Any, float]:
    """One text to image through ``run_generation``: (GenerationOutput, seconds)."""
    from easel.client.protocol import GenerateRequest
    from easel.server.generation import run_generation
    from easel.server.work import Inputs

    request = GenerateRequest(job="bench", prompt=fixtures.PROMPT, seed=7, steps=steps, guidance=guidance,
                              width=size, height=size, preview=False, **fields)
    t0 = time.perf_counter()
    out = run_generation(engine, request, Inputs("txt2img"), engine.model_info(None), lambda p: None,
                         lambda: False)
    return out, time.perf_counter() - t0


def tests_tiny_sd() -> fixtures.ModelSpec:
    """The tests' tiny SD as it is (native 64²), built once into a temporary folder."""
    sys.path.insert(0, str(fixtures.REPO / "tests"))
    from helpers.tiny_models import build_tiny_sd

    folder = build_tiny_sd(Path(fixtures.tmpdir("models")) / "tiny-sd")
    return fixtures.ModelSpec("tiny-sd", folder, 64, 20, 7.5, lambda: None)


def detail_rows(spec: fixtures.ModelSpec, size: int) -> list[Row]:
    from easel.server.imaging.metrics import detail

    engine = fixtures.engine_for(spec)
    generate(engine, 64, 2)  # warm-up
    one, one_s = generate(engine, size, STEPS, hires="off")
    two, two_s = generate(engine, size, STEPS, hires="on")  # "on": auto skips the demo model
    second = two.parameters["second_pass"]
    d1, d2 = detail(one.layers[0].rgba), detail(two.layers[0].rgba)
    note = (f"{size}² text to image, {STEPS} steps; first pass at {'x'.join(map(str, two.parameters['work_size']))}, "
            f"second pass {second['tiles']} tiles of {'x'.join(map(str, second['tile']))} at strength "
            f"{second['strength']}; load {loadavg()}")
    name = f"{spec.name} {size}²"
    return [Row("hires", f"{name}: one pass (hires off)", one_s, "s", note=note),
            Row("hires", f"{name}: two passes (hires on)", two_s, "s", note=note),
            Row("hires", f"{name}: two passes / one pass, time", two_s / one_s, "×"),
            Row("hires", f"{name}: detail, one pass (mean |Laplacian|)", d1, "lvl"),
            Row("hires", f"{name}: detail, two passes (mean |Laplacian|)", d2, "lvl"),
            check("hires", f"{name}: detail, two passes / one pass", d2 / max(d1, 1e-9), "×", ">= 1.5")]


def fullsize_rows(repeats: int = 2) -> list[Row]:
    """256² on a full-size SD1.5-shaped model in bf16: exact and raw diffusers in turns (after one
    warm-up each at 256²), then the default (native area) once."""
    import torch
    from diffusers import DiffusionPipeline

    from easel.server.engine import Engine

    from .gpu import build

    folder = os.environ.get("EASEL_BENCH_HIRES_FULLSIZE_MODEL") or build(
        Path(fixtures.tmpdir("hires-fullsize")) / "sd15-shaped", turbo=False, device="cpu")
    before = loadavg()
    engine = Engine([folder], device="cpu", dtype="bfloat16")
    engine.load(None)
    raw = DiffusionPipeline.from_pretrained(folder, torch_dtype=torch.bfloat16)
    raw.set_progress_bar_config(disable=True)
    size, steps = FULL_SIZE, FULL_STEPS

    def exact() -> None:
        out, _ = generate(engine, size, steps, 7.5, exact_size=True)
        assert out.parameters["work_size"] == [size, size]

    def plain() -> None:
        raw(fixtures.PROMPT, height=size, width=size, num_inference_steps=steps, guidance_scale=7.5,
            generator=torch.Generator().manual_seed(7))

    times = interleaved({"exact": exact, "raw": plain}, repeats=repeats, warmup=1)
    native, native_s = generate(engine, size, steps, 7.5)
    note = (f"SD1.5-shaped random weights, bfloat16 on the CPU ({bf16_flags()}), {steps} steps, CFG 7.5, "
            f"{torch.get_num_threads()} thread(s); exact and raw in turns, median of {repeats} after a warm-up "
            f"each; load {before} before, {loadavg()} after")
    work = "x".join(map(str, native.parameters["work_size"]))
    name = f"SD1.5-shaped {size}²"
    return [Row("hires", f"{name}: exact_size (runs at {size}²)", med(times["exact"]), "s", note=note),
            Row("hires", f"{name}: default (runs at {work}, scaled down), once", native_s, "s", note=note),
            Row("hires", f"{name}: raw diffusers at {size}²", med(times["raw"]), "s", note=note),
            check("hires", f"{name}: exact_size / raw diffusers", paired_ratio(times["exact"], times["raw"]), "×",
                  "<= 1.2")]


def run(quick: bool = False, fullsize: bool | None = None) -> list[Row]:
    size = QUICK_SIZE if quick else SIZE
    rows: list[Row] = []
    demo = fixtures.demo_spec()
    if demo is None:
        rows.append(Row("hires", "easel-demo", None, "", note=fixtures.DEMO_MISSING))
    for spec in ([demo] if demo else []) + [tests_tiny_sd()]:
        rows += detail_rows(spec, size)
    if fullsize if fullsize is not None else os.environ.get("EASEL_BENCH_HIRES_FULLSIZE") == "1":
        rows += fullsize_rows()
    else:
        rows.append(Row("hires", f"SD1.5-shaped {FULL_SIZE}²: exact vs native area vs raw diffusers", None, "",
                        note="skipped: set EASEL_BENCH_HIRES_FULLSIZE=1 (minutes on a CPU)"))
    return rows


if __name__ == "__main__":
    import argparse

    from .__main__ import print_table
    from .common import setup_threads
    from .fixtures import quiet

    parser = argparse.ArgumentParser(prog="python -m bench.hires", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--fullsize", action="store_true", help="also the full-size SD1.5 rows (minutes)")
    parser.add_argument("--only-fullsize", action="store_true", help="only the full-size SD1.5 rows")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("EASEL_BENCH_THREADS", "1")))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    quiet()
    setup_threads(args.threads)
    print_table(fullsize_rows() if args.only_fullsize else run(args.quick, args.fullsize or None))
