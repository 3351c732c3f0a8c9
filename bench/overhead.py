"""Overhead: `easel generate` through the real server and client vs the same raw diffusers call.

Both sides run the same weights (loaded twice: the server's Engine and a plain
``DiffusionPipeline.from_pretrained``), the model's own scheduler, the same seed, size, steps and
guidance, at the model's native size, so the server's work planning runs the model 1:1 (no
resampling) and txt2img/img2img give bit-identical pixels (checked; the note says so).

* easel: what `easel generate` does — connect and hello, send PNG files (image, mask), no step
  previews (the CLI shows none), result as PNG. One extra txt2img row is the plugins' way instead:
  raw RGBA, previews on; the server decodes, plans, runs the Engine, composites, encodes and stores the
  result on disk (``ResultStore``) before sending it. Timed from connect to the result's last byte.
* raw: ``pipe(prompt, ..., generator=torch.Generator().manual_seed(seed))`` returning PIL images
  (progress bar off), the strictest baseline.
* inpaint: a 384² selection in the middle of the 512² image; with the default context padding the
  work region is the whole image, so both run at 512². The server repaints its grown and feathered
  denoise mask, raw diffusers the hard mask: same compute, different pixels.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import fixtures
from .common import Row, check, interleaved, med, median_time, paired_ratio

SEED = 1234
STRENGTH = {"txt2img": 1.0, "img2img": 0.6, "inpaint": 1.0}
TARGET = "<= 1.05"


class Pair:
    """One model behind the server and as raw diffusers pipelines, with the pictures to send."""

    def __init__(self, spec: fixtures.ModelSpec, url: str, steps: int):
        from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting
        from PIL import Image as PILImage

        self.spec, self.url, self.steps, self.size = spec, url, steps, spec.native
        base = spec.load_raw()
        self.pipes = {"txt2img": base, "img2img": AutoPipelineForImage2Image.from_pipe(base),
                      "inpaint": AutoPipelineForInpainting.from_pipe(base)}
        for pipe in self.pipes.values():
            pipe.set_progress_bar_config(disable=True)
        self.rgba = fixtures.canvas(self.size)
        self.mask = fixtures.square_mask(self.size, self.size * 3 // 4)
        self.pil_image = PILImage.fromarray(self.rgba[..., :3])
        self.pil_mask = PILImage.fromarray(self.mask)
        self.png_image, self.png_mask = fixtures.png_bytes(self.rgba), fixtures.png_bytes(self.mask)
        self.timings: list[dict[str, float]] = []
        self.last: dict[str, np.ndarray] = {}

    def raw(self, mode: str) -> np.ndarray:
        import torch

        kwargs: dict[str, Any] = {"prompt": fixtures.PROMPT, "num_inference_steps": self.steps,
                                  "guidance_scale": self.spec.guidance,
                                  "generator": torch.Generator("cpu").manual_seed(SEED)}
        if mode != "img2img":
            kwargs.update(width=self.size, height=self.size)
        if mode != "txt2img":
            kwargs.update(image=self.pil_image, strength=STRENGTH[mode])
        if mode == "inpaint":
            kwargs["mask_image"] = self.pil_mask
        out = np.asarray(self.pipes[mode](**kwargs).images[0])
        self.last["raw"] = out
        return out

    def easel(self, mode: str, image_format: str = "png") -> np.ndarray:
        from easel.client.connection import Client, new_job_id
        from easel.client.protocol import GenerateRequest, Image

        request = GenerateRequest(job=new_job_id(), prompt=fixtures.PROMPT, model=self.spec.ref, steps=self.steps,
                                  guidance=self.spec.guidance, seed=SEED, strength=STRENGTH[mode],
                                  preview=image_format != "png")  # the CLI (png) asks for none, plugins do
        image = mask = None
        if mode == "txt2img":
            request.width = request.height = self.size
        else:
            image = Image.png(self.png_image)
        if mode == "inpaint":
            mask = Image.png(self.png_mask)
        with Client(self.url, image_format=image_format, client_name="easel-cli/bench") as client:
            result = client.generate(request, image, mask)
        self.timings.append(result.timings)
        out = fixtures.pixels(result.images[0].image)
        self.last["easel"] = out
        return out


def compare(pair: Pair, mode: str, repeats: int, image_format: str = "png") -> Row:
    pair.timings.clear()
    times = interleaved({"raw": lambda: pair.raw(mode), "easel": lambda: pair.easel(mode, image_format)}, repeats)
    raw, easel = med(times["raw"]), med(times["easel"])
    runs = pair.timings[-repeats:]  # the measured runs, in the order of times["easel"]
    t = {k: statistics.median(d[k] for d in runs) for k in runs[-1]}
    parts = (f"engine {t['run_s']:.3f} s, decode+plan+prepare {1000 * (t['total_s'] - t['run_s'] - t['compose_s'] - t['encode_s']):.0f} ms, "
             f"composite {1000 * t['compose_s']:.0f} ms, encode {1000 * t['encode_s']:.0f} ms, "
             f"store+transport {1000 * med([e - d['total_s'] for e, d in zip(times['easel'], runs)]):.0f} ms")
    same = ""
    if mode != "inpaint":
        diff = int(np.abs(pair.last["easel"][..., :3].astype(int) - pair.last["raw"].astype(int)).max())
        same = "; pixels identical" if diff == 0 else f"; pixels differ by up to {diff}"
    client = "" if image_format == "png" else f", plugin client ({image_format})"
    name = f"{pair.spec.name} {mode} {pair.size}², {pair.steps} steps{client}: easel/raw"
    extra = med([e - r for e, r in zip(times["easel"], times["raw"], strict=True)])
    # the same jobs' own split (no run-to-run noise): the client's wall time over the engine call inside it
    around = med([e / d["run_s"] for e, d in zip(times["easel"], runs)])
    note = (f"raw {raw:.3f} s, easel {easel:.3f} s (+{1000 * extra:.0f} ms: {parts}); wall / engine call within "
            f"each job {around:.3f}{same}")
    return check("overhead", name, paired_ratio(times["easel"], times["raw"]), "×", TARGET, note)


def store_cost(size: int, repeats: int) -> Row:
    """What ``ResultStore.save`` (a PNG per layer, on the worker, before the result is sent) costs."""
    from easel.server.codec import encode
    from easel.server.results import ResultStore

    store = ResultStore(Path(fixtures.tmpdir("store")))
    layer = fixtures.canvas(size)
    meta = {"type": "result", "images": [{"seed": 1, "x": 0, "y": 0, "width": size, "height": size}],
            "parameters": {"prompt": fixtures.PROMPT}}
    count = iter(range(10**6))
    save = median_time(lambda: store.save(f"j{next(count)}", meta, [layer]), repeats)
    rgba = median_time(lambda: encode(layer, "rgba"), repeats)
    return Row("overhead", f"server: store one {size}² result layer (PNG) before sending it", 1000 * save, "ms",
               note=f"on every job's critical path; the plugins' raw RGBA encode of it takes {1000 * rgba:.1f} ms")


def thread_probe(spec: fixtures.ModelSpec, repeats: int = 3) -> Row:
    """UNet step + VAE decode at 512² with 2 torch threads vs 1, measured in turns."""
    import torch

    pipe = spec.load_raw()
    latents, text = torch.randn(2, 4, 64, 64), torch.randn(2, 77, pipe.text_encoder.config.hidden_size)
    before = torch.get_num_threads()

    def work(n: int) -> None:
        torch.set_num_threads(n)
        with torch.no_grad():
            pipe.unet(latents, 10, text)
            pipe.vae.decode(latents[:1])

    try:
        times = interleaved({"1": lambda: work(1), "2": lambda: work(2)}, repeats)
    finally:
        torch.set_num_threads(before)
    one, two = med(times["1"]), med(times["2"])
    return Row("overhead", "torch threads: 2 threads / 1 thread (UNet step + VAE decode)", two / one, "×",
               note=f"1 thread {1000 * one:.0f} ms, 2 threads {1000 * two:.0f} ms; the bench runs with "
                    f"{before} (--threads)")


def run(quick: bool = False) -> list[Row]:
    specs = [fixtures.tiny_sd(512)]
    demo = fixtures.demo_spec()
    rows: list[Row] = []
    if demo is None:
        rows.append(Row("overhead", "easel-demo", None, "", note=fixtures.DEMO_MISSING))
    else:
        specs.append(demo)
    repeats = 3 if quick else 7
    runs = [("txt2img", "png"), ("img2img", "png"), ("inpaint", "png")] + ([] if quick else [("txt2img", "rgba")])
    for spec in specs:
        engine = fixtures.engine_for(spec)
        with fixtures.serve(engine) as (url, _):
            pair = Pair(spec, url, 8 if quick else spec.steps)
            for mode, image_format in runs:
                t0 = time.perf_counter()
                rows.append(compare(pair, mode, repeats, image_format))
                print(f"  {rows[-1].name}: {rows[-1].value:.3f} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr,
                      flush=True)
        engine.close()
    for size in (512,) if quick else (512, 2048):
        rows.append(store_cost(size, 3))
    if not quick:
        rows.append(thread_probe(specs[0]))
    return rows
