"""Families: the engine's overhead against raw diffusers per model family, on the tests' tiny
random-weight pipelines (tests/helpers/tiny_models.py, tests/helpers/tiny_flow_models.py).

Per family, txt2img and img2img at 64², the same seed, steps and guidance: ``Engine.run`` (job
validation, the family's pipeline via from_pipe, a fresh scheduler, per-image CPU generators, the
step callback with its cancel/NaN checks, step previews, float output to PIL) against the plain
``AutoPipelineFor*`` call. Tiny models make the fixed cost per call visible: on real models a step
takes 0.1-10 s, so the same milliseconds are far below 1 %. Pixels are checked identical.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from easel.server.families import Family

from .common import Row, check, interleaved, med, paired_ratio

REPO = Path(__file__).resolve().parent.parent
SIZE, STEPS, SEED = 64, 4, 1234
TARGET = "<= 1.5"


def _builders() -> dict[Family, Any]:
    sys.path.insert(0, str(REPO / "tests"))
    from helpers.tiny_flow_models import build_tiny_flux, build_tiny_sd3
    from helpers.tiny_models import build_tiny_sd, build_tiny_sdxl

    return {Family.SD1: (build_tiny_sd, 7.5), Family.SDXL: (build_tiny_sdxl, 6.0), Family.SD3: (build_tiny_sd3, 4.0),
            Family.FLUX: (build_tiny_flux, 3.5)}


def run(quick: bool = False) -> list[Row]:
    import torch
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image
    from PIL import Image

    from easel.server.engine import Engine, EngineJob

    from .fixtures import canvas, tmpdir

    repeats = 3 if quick else 7
    rows: list[Row] = []
    picture = Image.fromarray(canvas(SIZE)[..., :3])
    for family, (build, guidance) in _builders().items():
        folder = build(Path(tmpdir("families")) / f"tiny-{family}")
        raw_t2i = AutoPipelineForText2Image.from_pretrained(folder, dtype=torch.float32)
        raw = {"txt2img": raw_t2i, "img2img": AutoPipelineForImage2Image.from_pipe(raw_t2i)}
        for pipe in raw.values():
            pipe.set_progress_bar_config(disable=True)
        negative = "" if family.unsupported("negative_prompt") else "blurry"
        with Engine([folder], device="cpu", dtype="float32") as engine:
            for mode in ("txt2img", "img2img"):
                job = EngineJob(mode=mode, prompt="a red cat", negative_prompt=negative, steps=STEPS,
                                guidance=guidance, seeds=[SEED], width=SIZE, height=SIZE,
                                image=picture if mode == "img2img" else None, strength=0.75)
                kwargs: dict[str, Any] = {"prompt": job.prompt, "num_inference_steps": STEPS,
                                          "guidance_scale": guidance, "width": SIZE, "height": SIZE}
                if negative:
                    kwargs["negative_prompt"] = negative
                if mode == "img2img":
                    kwargs.update(image=picture, strength=0.75)
                rows.append(_measure(family, mode, engine, raw[mode], job, kwargs, repeats))
    return rows


def _measure(family: Family, mode: str, engine: Any, pipe: Any, job: Any, kwargs: dict[str, Any], repeats: int) -> Row:
    import torch

    out: dict[str, np.ndarray] = {}

    def run_raw() -> None:
        gen = torch.Generator("cpu").manual_seed(SEED)
        out["raw"] = np.asarray(pipe(**kwargs, generator=gen).images[0])

    def run_easel() -> None:
        out["easel"] = np.asarray(engine.run(job, lambda p: None, lambda: False)[0])

    times = interleaved({"raw": run_raw, "easel": run_easel}, repeats)
    diff = int(np.abs(out["easel"].astype(int) - out["raw"].astype(int)).max())
    extra = med([e - r for e, r in zip(times["easel"], times["raw"], strict=True)])
    note = (f"raw {1000 * med(times['raw']):.1f} ms, easel {1000 * med(times['easel']):.1f} ms "
            f"(+{1000 * extra:.1f} ms with previews); "
            + ("pixels identical" if diff == 0 else f"pixels differ by up to {diff}"))
    return check("families", f"tiny {family} {mode} {SIZE}², {STEPS} steps: engine/raw",
                 paired_ratio(times["easel"], times["raw"]), "×", TARGET, note)
