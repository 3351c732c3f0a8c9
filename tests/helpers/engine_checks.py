"""What the engine tests of every family share: the job runner, pixel comparison and the raw diffusers
pipelines that are the reference results."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from easel.server.engine import Engine, EngineJob


def gradient(size: int) -> Image.Image:
    """An RGB test picture: red and green ramps over a constant blue."""
    y, x = np.mgrid[0:size, 0:size]
    return Image.fromarray(np.stack([x * 4, y * 4, np.full_like(x, 90)], -1).astype(np.uint8), "RGB")


def run(engine: Engine, j: EngineJob, events: list | None = None, cancelled=lambda: False) -> list[Image.Image]:
    return engine.run(j, (events if events is not None else []).append, cancelled)


def arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


def assert_close(a: Image.Image, b: Image.Image) -> None:
    """Equal up to one 8-bit step (batched vs single matmuls may differ in the last float bits)."""
    assert a.size == b.size
    assert np.abs(arr(a) - arr(b)).max() <= 1


def raw_pipelines(paths: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Plain diffusers pipelines straight from the folders, per name and mode: the reference results."""
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, AutoPipelineForText2Image

    out = {}
    for name, path in paths.items():
        t2i = AutoPipelineForText2Image.from_pretrained(path, dtype=torch.float32)
        out[name] = {"txt2img": t2i, "img2img": AutoPipelineForImage2Image.from_pipe(t2i),
                     "inpaint": AutoPipelineForInpainting.from_pipe(t2i)}
        for pipe in out[name].values():
            pipe.set_progress_bar_config(disable=True)
    return out


def raw_call(pipe: Any, j: EngineJob, seed: int, **extra: Any) -> Image.Image:
    """``j`` run by a raw diffusers pipeline with one seed (its own defaults where ``j`` leaves a value out;
    no negative prompt for FLUX.1, which has none)."""
    kwargs = dict(prompt=j.prompt, num_inference_steps=j.steps, height=j.height, width=j.width,
                  generator=torch.Generator("cpu").manual_seed(seed), **extra)
    if j.guidance is not None:
        kwargs["guidance_scale"] = j.guidance
    if not type(pipe).__name__.startswith("Flux"):
        kwargs["negative_prompt"] = j.negative_prompt
    if j.mode != "txt2img":
        kwargs.update(image=j.image, strength=j.strength)
    if j.mode == "inpaint":
        kwargs["mask_image"] = j.mask
    return pipe(**kwargs).images[0]


def assert_matches_raw(images: list[Image.Image], pipe: Any, j: EngineJob, size: int, differ: int) -> None:
    """Image i of the engine's batch equals a raw batch-1 run with ``j.seeds[i]``; seeds give different images."""
    assert len(images) == len(j.seeds)
    for img, seed in zip(images, j.seeds):
        assert img.mode == "RGB" and img.size == (size, size)
        assert img.info["easel"]["seed"] == seed
        assert_close(img, raw_call(pipe, j, seed))
    assert np.abs(arr(images[0]) - arr(images[1])).max() > differ
