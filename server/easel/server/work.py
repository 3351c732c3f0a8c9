"""What one generation takes and gives: decoded inputs, result layers, seeds, one progress bar.

Shared by ``generation`` (a planned work region), ``hires`` (its second pass) and ``upscale``
(tiled refinement), so that imports go one way: ``generation`` -> ``hires`` -> ``upscale`` -> ``work``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from ..client.protocol import GenerateRequest, request_fields
from .engine.types import EngineJob, ModelInfo, Progress, ProgressFn


@dataclass
class Layer:
    """One result image as a layer: RGBA pixels, its document offset and the seed that made it."""

    rgba: np.ndarray  # HxWx4 uint8
    x: int
    y: int
    seed: int


@dataclass
class GenerationOutput:
    """A finished job: its layers, the parameters really used (for PNG metadata) and timings."""

    layers: list[Layer]
    parameters: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class Inputs:
    """Decoded, validated inputs of a request."""

    mode: str
    image: np.ndarray | None = None  # HxWx4 uint8
    mask: np.ndarray | None = None  # HxW uint8
    control: np.ndarray | None = None  # HxWx4 uint8, ControlNet guide (docs/features.md)
    attached: dict[str, np.ndarray] = field(default_factory=dict)  # the images the request's lists name, RGBA


def pick_seeds(seed: int, batch: int) -> list[int]:
    """Seed -1 draws a random one; image i of a batch uses seed + i."""
    base = random.randrange(0, 2**32) if seed == -1 else seed
    return [(base + i) % 2**63 for i in range(batch)]


def black_out(images: list[np.ndarray], flagged: list[bool] | None) -> list[np.ndarray]:
    """``images`` with the flagged ones black: the safety checker's verdict on any part (a first pass,
    a tile) covers the whole image."""
    if flagged is None:
        return images
    return [np.zeros_like(img) if flag else img for img, flag in zip(images, flagged, strict=True)]


def engine_job(request: GenerateRequest, **work: Any) -> EngineJob:
    """The engine's job for ``request``: the request itself, every field EngineJob shares with it by name
    (LoRAs as (name, weight) pairs), then ``work``: what this pass decides (mode, model id, size, seeds,
    images at work size, and any field it overrides, e.g. a tile's strength)."""
    shared = {f.name for f in fields(EngineJob)} & set(request_fields())
    values: dict[str, Any] = {name: getattr(request, name) for name in shared}
    values["loras"] = [(item["name"], float(item.get("weight", 1.0))) for item in request.loras or []]
    return EngineJob(**{**values, "request": request, **work})


def engine_steps(job: EngineJob, model: ModelInfo) -> int:
    """The ``total`` that ``engine.run(job)`` reports: denoising steps over all its images.

    The runner's rule (engine/runner.py ``plan``): text to image runs ``steps``; with an image,
    ``int(steps * strength)`` but at least 1 (steps are raised for tiny strengths); strength 0
    runs nothing. Inpaint, and any job on an inpainting model, runs image by image.
    """
    steps = job.steps or model.default_steps
    if job.mode == "txt2img" or model.family.edits:  # edits run every step (runner.plan)
        per_image = steps
    elif job.strength <= 0:
        return 0
    else:
        per_image = max(1, int(steps * job.strength))
    return per_image * (len(job.seeds) if job.mode == "inpaint" or model.inpaint else 1)


class StepBar:
    """One progress bar over several engine runs (two passes, many tiles).

    ``total`` is the sum of every run's predicted steps (``engine_steps``); each run is started
    with ``begin`` and fed the engine's ``denoise`` reports, which count on from where the
    previous run ended, so ``step`` rises 1, 2, … ``total`` across runs. A run that reports
    another total corrects the bar. Other stages (model loading) pass through unchanged.
    """

    def __init__(self, report: ProgressFn, total: int, stage: str = "denoise"):
        self.report, self.total, self.stage = report, total, stage
        self.start = 0  # bar position where the current run began
        self.expected = 0  # steps the current run is predicted to take
        self.step = 0
        self.message = ""

    def begin(self, expected: int, message: str = "") -> StepBar:
        """Start the next run (the previous one is complete), predicted to take ``expected`` steps."""
        self.start += self.expected
        self.expected, self.message = expected, message
        return self

    def __call__(self, p: Progress) -> None:
        if p.stage != "denoise":
            self.report(p)
            return
        if p.total > 0 and p.total != self.expected:
            self.total += p.total - self.expected
            self.expected = p.total
        self.step = max(self.step, min(self.start + p.step, self.total))
        message = ": ".join(m for m in (self.message, p.message) if m)
        self.report(Progress(self.stage, self.step, self.total, message, p.preview))
