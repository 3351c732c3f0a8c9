"""Tiled upscale ("SD upscale"): Lanczos or an upscaler model x2/x4, then img2img over overlapping tiles, blended back.

A ``generate`` with ``upscale`` (2 or 4) and an ``image`` comes here (see docs/features.md):

1. The sent image is resized by ``upscale`` with Lanczos (alpha-premultiplied when it has
   transparency), or with ``upscaler``, a model of the models folders (``easel.server.upscalers``:
   tiled, progress ``"upscaler tile k/N"``, cancel between tiles) run on the colour with its
   transparent pixels filled, the alpha resized with Lanczos; transparent pixels are filled for the
   model (``imaging.fill``). ``strength`` 0 returns this upscale as it is.
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
from .demo.notes import toy_upscale
from .engine.types import CancelledFn, EngineAPI, EngineError, EngineJob, JobCancelled, ModelInfo, Progress, ProgressFn
from .imaging.compose import resize
from .imaging.fill import fill_transparent
from .imaging.geometry import Extent
from .imaging.tiles import TileBlender, TilePlan, plan_tiles
from .limits import Limits
from .prompt_regions import TileRegions, region_masks
from .work import GenerationOutput, Inputs, Layer, StepBar, black_out, engine_job, engine_steps, pick_seeds

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


def _upscalers(engine: EngineAPI) -> Any:
    """The engine's upscalers (easel.server.upscalers.Upscalers), or None for an engine without them."""
    return getattr(engine, "upscalers", None)


def upscaler_infos(engine: EngineAPI) -> list[dict[str, Any]]:
    """The welcome's ``upscalers``: id, name and scale (None until known) of each upscaler model."""
    upscalers = _upscalers(engine)
    return upscalers.infos() if upscalers is not None else []


def check_upscaler(request: GenerateRequest, engine: EngineAPI) -> None:
    """Submit-time check of ``upscaler``: it comes with ``upscale`` and is one the server offers."""
    if request.upscaler is None:
        return
    if request.upscale is None:
        raise ProtocolError("'upscaler' makes the tiled upscale; send 'upscale' (2 or 4) with it", field="upscaler")
    upscalers = _upscalers(engine)
    if upscalers is None:
        raise ProtocolError("'upscaler': this server runs no upscaler models; leave it out (Lanczos)",
                            field="upscaler")
    try:
        upscalers.check(request.upscaler)
    except EngineError as exc:
        raise ProtocolError(str(exc), field="upscaler") from None


def enlarge(engine: EngineAPI, request: GenerateRequest, source: np.ndarray, progress: ProgressFn,
            cancelled: CancelledFn) -> np.ndarray:
    """``source`` (HxWx4 uint8) ``request.upscale``× with Lanczos, or with ``request.upscaler``."""
    factor = request.upscale or 1
    size = Extent(source.shape[1] * factor, source.shape[0] * factor)
    if request.upscaler is None:
        return lanczos(source, size)

    def report(k: int, total: int) -> None:
        progress(Progress(STAGE, k - 1, total, f"upscaler tile {k}/{total}"))

    upscalers = _upscalers(engine)
    if upscalers is None:
        raise EngineError("'upscaler': this server runs no upscaler models; leave it out (Lanczos)", field="upscaler")
    rgb = upscalers.upscale(request.upscaler, fill_transparent(source), factor, report, cancelled)
    alpha = source[..., 3]
    return np.dstack([rgb, resize(alpha, size) if alpha.min() < 255 else np.full(rgb.shape[:2], 255, np.uint8)])


def lanczos(rgba: np.ndarray, size: Extent) -> np.ndarray:
    """HxWx4 uint8 resized with Lanczos; opaque images stay exactly opaque (colour resized alone)."""
    if rgba[..., 3].min() == 255:
        rgb = resize(np.ascontiguousarray(rgba[..., :3]), size)
        return np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    return resize(rgba, size)  # Pillow resizes RGBA premultiplied: no dark fringes


def run_upscale(engine: EngineAPI, request: GenerateRequest, inputs: Inputs, model: ModelInfo,
                progress: ProgressFn, cancelled: CancelledFn) -> GenerationOutput:
    """Upscale ``inputs.image`` by ``request.upscale`` and refine it tile by tile (module doc)."""
    if inputs.image is None or request.upscale is None:
        raise ProtocolError("'upscale' needs the 'image' to upscale (the layer or the canvas)", field="image")
    t0 = time.perf_counter()
    factor, strength = request.upscale, refine_strength(request)
    seeds = pick_seeds(request.seed, request.batch)
    source = inputs.image
    size = Extent(source.shape[1] * factor, source.shape[0] * factor)
    big = enlarge(engine, request, source, progress, cancelled)
    plan = plan_tiles(size, model.native)
    x, y = request.x * factor, request.y * factor
    parameters: dict[str, Any] = {
        "model": model.id, "prompt": request.prompt, "negative_prompt": request.negative_prompt,
        "steps": request.steps or model.default_steps,
        "guidance": request.guidance if request.guidance is not None else model.default_guidance,
        "scheduler": request.scheduler or "default", "strength": strength, "seeds": seeds, "mode": "upscale",
        "upscale": factor, "region": [x, y, size.width, size.height], **plan.to_dict(),
    }
    if request.upscaler is not None:
        parameters["upscaler"] = request.upscaler
    if strength <= 0:  # nothing to refine: the plain upscale (Lanczos or the upscaler), no diffusion run
        layers = [Layer(big.copy() if i else big, x, y, seed) for i, seed in enumerate(seeds)]
        return GenerationOutput(layers, parameters, {"prepare_s": time.perf_counter() - t0, "run_s": 0.0})
    t1 = time.perf_counter()
    refiner = TileRefiner(engine, request, model, plan, seeds, strength,
                          regions=region_masks(request, inputs.attached, None, size))
    if model.family.toy:  # said before the tiles run, and kept in the result
        parameters["notes"] = [toy_upscale(plan.tile)]
        progress(Progress(STAGE, 0, refiner.total(), parameters["notes"][0]))
    blended, used, blend_s = refiner.run([fill_transparent(big)], StepBar(progress, refiner.total(), STAGE), cancelled)
    t2 = time.perf_counter()
    layers = [Layer(np.dstack([rgb, big[..., 3]]), x, y, seed) for rgb, seed in zip(blended, seeds, strict=True)]
    parameters.update({k: used[k] for k in ("steps", "guidance", "scheduler", "strength") if k in used})
    if refiner.flagged is not None:
        parameters["nsfw"] = refiner.flagged
    timings = {"prepare_s": t1 - t0, "run_s": t2 - t1 - blend_s, "compose_s": blend_s + time.perf_counter() - t2}
    return GenerationOutput(layers, parameters, timings)


class TileRefiner:
    """img2img over the tiles of ``plan``, blended back: the upscale's refinement and the second pass's.

    ``run`` takes the images to refine (HxWx3 uint8 at ``plan.size``): one for all ``seeds`` (one
    engine job per tile makes every batch image; the upscale) or, with ``per_seed``, one per seed
    (a job per tile and seed; image ``i`` of the second pass refines its own first pass). With
    ``mask`` (HxW at ``plan.size``) the jobs inpaint, and tiles where the mask is all 0 are not
    run: they keep the source's pixels. Progress: ``message`` "tile k/N" (after ``name``, e.g.
    "second pass, tile k/N"; a lone tile shows only the name), previews of the tile being refined.
    """

    def __init__(self, engine: EngineAPI, request: GenerateRequest, model: ModelInfo, plan: TilePlan, seeds: list[int],
                 strength: float, mask: np.ndarray | None = None, name: str | None = None, per_seed: bool = False,
                 regions: dict[str, np.ndarray] | None = None):
        self.engine, self.request, self.model, self.plan = engine, request, model, plan
        self.seeds, self.strength, self.name = seeds, strength, name
        self.masks = plan.crops(mask) if mask is not None else None
        self.active = [i for i in range(plan.count) if self.masks is None or self.masks[i].any()]
        self.groups = [[seed] for seed in seeds] if per_seed else [seeds]
        self.flagged: list[bool] | None = None  # per seed, after ``run``: a tile the safety checker flagged
        self.regions = TileRegions(request, plan, regions)  # regional prompts: region masks at ``plan.size``

    def job(self, group: int, image: np.ndarray | None = None, mask: np.ndarray | None = None,
            index: int | None = None) -> EngineJob:
        """The engine job for one tile (``index``) and seed group (``image``/``mask``: the tile's crops)."""
        variation = self.request.variation_seed
        if len(self.groups) > 1 and variation is not None:
            variation = (variation + group) % 2**63  # as image ``group`` of a batch
        return engine_job(
            self.request, mode="img2img" if self.masks is None else "inpaint", model=self.model.id,
            seeds=self.groups[group], width=self.plan.tile.width, height=self.plan.tile.height,
            strength=self.strength, control_model=None, controls=None, variation_seed=variation,  # no guides
            image=None if image is None else PILImage.fromarray(np.ascontiguousarray(image), "RGB"),
            mask=None if mask is None else PILImage.fromarray(np.ascontiguousarray(mask), "L"),
            **self.regions.job_fields(index))

    def total(self) -> int:
        """Denoising steps over every tile that runs (what the progress bar counts)."""
        return len(self.active) * sum(engine_steps(self.job(k), self.model) for k in range(len(self.groups)))

    def run(self, sources: list[np.ndarray], bar: StepBar, cancelled: CancelledFn
            ) -> tuple[list[np.ndarray], dict[str, Any], float]:
        """(one blended image per seed, what the engine used, seconds spent blending)."""
        if len(sources) != len(self.groups):
            raise ValueError(f"{len(sources)} images to refine for {len(self.groups)} seed groups")
        blenders = [TileBlender(self.plan) for _ in self.seeds]
        crops = [self.plan.crops(source) for source in sources]
        used: dict[str, Any] = {}
        blend_s, count = 0.0, len(self.active)
        order = {index: k for k, index in enumerate(self.active, start=1)}
        for index in range(self.plan.count):
            if cancelled():
                raise JobCancelled()
            if index not in order:  # nothing to repaint here: the source's own pixels
                results = [crops[k if len(crops) > 1 else 0][index] for k in range(len(self.seeds))]
            else:
                k = order[index]
                tile = f"tile {k}/{count}" if count > 1 or self.name is None else ""
                message = ", ".join(m for m in (self.name, tile) if m)
                results = []
                for group in range(len(self.groups)):
                    job = self.job(group, crops[group][index], None if self.masks is None else self.masks[index],
                                   index)
                    images = self.engine.run(job, bar.begin(engine_steps(job, self.model), message), cancelled)
                    used = images[0].info.get("easel", {}) if images else used
                    for image in images:
                        self._check(len(results), image.info.get("easel", {}))
                        results.append(np.asarray(image.convert("RGB")))
            t = time.perf_counter()
            for blender, image in zip(blenders, results, strict=True):
                blender.add(image)
            blend_s += time.perf_counter() - t
        return black_out([b.result() for b in blenders], self.flagged), used, blend_s

    def _check(self, index: int, info: dict[str, Any]) -> None:
        """Note the safety checker's verdict on a tile of seed ``index`` (when the server runs one)."""
        if "nsfw" in info:
            self.flagged = self.flagged or [False] * len(self.seeds)
            self.flagged[index] = self.flagged[index] or bool(info["nsfw"])
