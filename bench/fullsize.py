"""The full-size SD1.5-shaped model of ``make bench-full`` and one Easel job on it (bench.full, bench.coldstart).

The model is ``bench.gpu``'s SD1.5-shaped pipeline (UNet 320-640-1280-1280, a CLIP-L-sized text encoder,
the SD VAE, Euler) with random weights, built once and kept in ``$EASEL_BENCH_CACHE`` (default
``~/.cache/easel-bench``), keyed by the diffusers and transformers versions; nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import fixtures
from .common import bf16_flags

SIZE, SEED, GUIDANCE = 512, 1234, 7.0


def cache_root() -> Path:
    return Path(os.environ.get("EASEL_BENCH_CACHE") or Path.home() / ".cache" / "easel-bench")


def model_folder() -> Path:
    """The full-size SD1.5-shaped random-weight model (fp16 files), built on first use and cached."""
    import diffusers
    import transformers

    folder = cache_root() / f"sd15-shaped-diffusers{diffusers.__version__}-transformers{transformers.__version__}"
    if (folder / "model_index.json").is_file():
        return folder
    from .gpu import build

    print(f"  building the full-size SD1.5-shaped model in {folder} (once, about a minute)…", file=sys.stderr,
          flush=True)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    build(partial, turbo=False, device="cpu")
    partial.rename(folder)
    return folder


def tiny_decoder_root() -> Path:
    """A models folder holding ``taesd/``: a random-weight TAESD (diffusers' AutoencoderTiny at its default,
    full-size shape), for ``--decoder tiny`` rows; built once in the bench cache."""
    root = cache_root() / "taesd-models"
    if not (root / "taesd" / "config.json").is_file():
        import torch
        from diffusers import AutoencoderTiny

        torch.manual_seed(0)
        AutoencoderTiny().save_pretrained(root / "taesd")
    return root


def context(dtype: str) -> str:
    return f"{dtype}, {threads()} thread(s), CPU bf16: {bf16_flags()}"


def threads() -> int:
    import torch

    return torch.get_num_threads()


def easel_job(url: str, model: str, steps: int, first_preview: list[float] | None = None,
              timings: dict[str, float] | None = None) -> np.ndarray:
    """One txt2img job as the plugins send it (raw RGBA, previews on); HxWx3 uint8. ``timings`` gets the
    server's split of the job (``run_s``, ``second_pass_s``: the engine calls) and ``wall_s``, the client's whole wait."""
    from easel.client.connection import Client, new_job_id
    from easel.client.protocol import GenerateRequest

    request = GenerateRequest(job=new_job_id(), prompt=fixtures.PROMPT, model=model, steps=steps,
                              guidance=GUIDANCE, seed=SEED, width=SIZE, height=SIZE, preview=True)
    t0 = time.perf_counter()

    def seen(p: Any) -> None:
        if first_preview is not None and p.preview is not None and len(first_preview) == 0:
            first_preview.append(time.perf_counter() - t0)

    with Client(url, image_format="rgba", client_name="easel-plugin/bench-full") as client:
        result = client.generate(request, on_progress=seen)
    if timings is not None:
        timings.update(result.timings, wall_s=time.perf_counter() - t0)
    return fixtures.pixels(result.images[0].image)[..., :3]
