"""Tiled upscale ("SD upscale"): Lanczos x2/x4, then img2img over overlapping tiles, blended back.

A ``generate`` with ``upscale`` (2 or 4) and an ``image`` comes here (see docs/features.md):

1. The sent image is resized by ``upscale`` with Lanczos (alpha-premultiplied when it has
   transparency); transparent pixels are filled for the model (``imaging.fill``).
2. ``imaging.tiles.plan_tiles`` covers it with tiles of the model's native size.
3. Each tile runs img2img at native size with the refine strength; every tile of batch image
   ``i`` uses seed ``seed + i`` (one seed for all tiles keeps the texture consistent).
4. Tiles are blended with feathered weights that sum to 1 exactly; the result keeps the
   upscaled alpha. It comes back as one layer of ``upscale`` x the sent size, placed at
   ``(x * upscale, y * upscale)``: the sent image's place in the document scaled by ``upscale``.

Progress is one bar over all tiles: stage ``"upscale"``, ``step`` counts denoising steps over
every tile, ``message`` says ``"tile k/N"``; previews show the tile being refined.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from PIL import Image as PILImage

from ..client.protocol import GenerateRequest, Image, ProtocolError
from .engine.types import CancelledFn, EngineJob, JobCancelled, ModelInfo, Progress, ProgressFn
from .features import engine_fields
from .imaging.compose import resize
from .imaging.fill import fill_transparent
from .imaging.geometry import Extent
from .imaging.tiles import TileBlender, TilePlan, plan_tiles
from .limits import Limits
from .work import GenerationOutput, Inputs, Layer, pick_seeds

#: Refine strength when the request leaves ``strength`` at its default 1.0 (which would repaint everything).
DEFAULT_STRENGTH = 0.35
STAGE = "upscale"


def refine_strength(request: GenerateRequest) -> float:
    """The request's strength, or ``DEFAULT_STRENGTH`` when it is the protocol default 1.0."""
    return DEFAULT_STRENGTH if request.strength >= 1.0 else request.strength


def check_upscale(request: GenerateRequest, images: dict[str, Image], limits: Limits) -> None:
    """Submit-time checks from the image headers: an image, no mask, and a result within the limits."""
    image = images.get("image")
    if image is None:
        raise ProtocolError("'upscale' needs the 'image' to upscale (the layer or the canvas)", field="image")
    if "mask" in images:
        raise ProtocolError("'upscale' refines the whole image; send it without a 'mask'", field="mask")
    if request.control_model is not None:
        raise ProtocolError("'upscale' does not take a sketch guide; send it without 'control_model'",
                            field="control_model")
    factor = request.upscale or 1
    width, height = image.width * factor, image.height * factor
    if width > limits.max_side or height > limits.max_side or width * height > limits.max_pixels:
        raise ProtocolError(
            f"'upscale' x{factor} of the {image.width}x{image.height} image gives {width}x{height}; this server "
            f"returns at most {limits.max_side} px a side and {limits.max_pixels} pixels. Use a smaller factor "
            "or upscale a smaller part of the image", field="upscale")


def lanczos(rgba: np.ndarray, size: Extent) -> np.ndarray:
    """HxWx4 uint8 resized with Lanczos; opaque images stay exactly opaque (colour resized alone)."""
    if rgba[..., 3].min() == 255:
        rgb = resize(np.ascontiguousarray(rgba[..., :3]), size)
        return np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    return resize(rgba, size)  # Pillow resizes RGBA premultiplied: no dark fringes


class TileProgress:
    """Maps the engine's per-tile ``denoise`` reports onto one monotonic bar over all tiles."""

    def __init__(self, report: ProgressFn, tiles: int):
        self.report, self.tiles = report, tiles
        self.tile = 0  # index of the tile being refined
        self.per_tile = 0  # denoising steps one tile takes (learnt from the engine's first report)
        self.step = 0

    def __call__(self, p: Progress) -> None:
        if p.stage != "denoise":  # model loading and the like pass through
            self.report(p)
            return
        if p.total > 0:
            self.per_tile = p.total
        self.step = max(self.step, min(self.tile * self.per_tile + p.step, self.tiles * self.per_tile))
        message = f"tile {self.tile + 1}/{self.tiles}" + (f": {p.message}" if p.message else "")
        self.report(Progress(STAGE, self.step, self.tiles * self.per_tile, message, p.preview))


def run_upscale(engine: Any, request: GenerateRequest, inputs: Inputs, model: ModelInfo,
                progress: ProgressFn, cancelled: CancelledFn) -> GenerationOutput:
    """Upscale ``inputs.image`` by ``request.upscale`` and refine it tile by tile (module doc)."""
    if inputs.image is None or request.upscale is None:
        raise ProtocolError("'upscale' needs the 'image' to upscale (the layer or the canvas)", field="image")
    t0 = time.perf_counter()
    factor, strength = request.upscale, refine_strength(request)
    seeds = pick_seeds(request.seed, request.batch)
    source = inputs.image
    size = Extent(source.shape[1] * factor, source.shape[0] * factor)
    big = lanczos(source, size)
    plan = plan_tiles(size, model.native)
    x, y = request.x * factor, request.y * factor
    parameters: dict[str, Any] = {
        "model": model.id, "prompt": request.prompt, "negative_prompt": request.negative_prompt,
        "steps": request.steps or model.default_steps,
        "guidance": request.guidance if request.guidance is not None else model.default_guidance,
        "scheduler": request.scheduler or "default", "strength": strength, "seeds": seeds, "mode": "upscale",
        "upscale": factor, "region": [x, y, size.width, size.height], **plan.to_dict(),
    }
    if strength <= 0:  # nothing to refine: the plain Lanczos upscale, no model run
        layers = [Layer(big.copy() if i else big, x, y, seed) for i, seed in enumerate(seeds)]
        return GenerationOutput(layers, parameters, {"prepare_s": time.perf_counter() - t0, "run_s": 0.0})
    t1 = time.perf_counter()
    blended, used, blend_s = refine_tiles(engine, request, model, plan, fill_transparent(big), seeds, strength,
                                          progress, cancelled)
    t2 = time.perf_counter()
    layers = [Layer(np.dstack([rgb, big[..., 3]]), x, y, seed) for rgb, seed in zip(blended, seeds, strict=True)]
    parameters.update({k: used[k] for k in ("steps", "guidance", "scheduler", "strength") if k in used})
    timings = {"prepare_s": t1 - t0, "run_s": t2 - t1 - blend_s, "compose_s": blend_s + time.perf_counter() - t2}
    return GenerationOutput(layers, parameters, timings)


def refine_tiles(engine: Any, request: GenerateRequest, model: ModelInfo, plan: TilePlan, rgb: np.ndarray,
                 seeds: list[int], strength: float, progress: ProgressFn, cancelled: CancelledFn
                 ) -> tuple[list[np.ndarray], dict[str, Any], float]:
    """img2img on every tile of ``rgb`` (HxWx3 at ``plan.size``); (one blended image per seed, used, blend s)."""
    blenders = [TileBlender(plan) for _ in seeds]
    tracker = TileProgress(progress, plan.count)
    used: dict[str, Any] = {}
    blend_s = 0.0
    for index, crop in enumerate(plan.crops(rgb)):
        if cancelled():
            raise JobCancelled()
        tracker.tile = index
        job = EngineJob(
            mode="img2img", prompt=request.prompt, negative_prompt=request.negative_prompt, model=model.id,
            steps=request.steps, guidance=request.guidance, seeds=seeds, width=plan.tile.width,
            height=plan.tile.height, scheduler=request.scheduler, strength=strength,
            image=PILImage.fromarray(np.ascontiguousarray(crop), "RGB"), preview=request.preview,
            **{**engine_fields(request, None), "control_model": None},  # LoRAs, variations; no sketch guide
        )
        results = engine.run(job, tracker, cancelled)
        used = results[0].info.get("easel", {}) if results else used
        t = time.perf_counter()
        for blender, image in zip(blenders, results, strict=True):
            blender.add(np.asarray(image.convert("RGB")))
        blend_s += time.perf_counter() - t
    return [b.result() for b in blenders], used, blend_s
