"""The second pass ("hires fix"): keep a big region's detail when the model runs well below its size.

A region more than ``SECOND_PASS_FACTOR`` (1.5) x the work size on each side (``WorkPlan.wants_second_pass``)
is, after the first pass at about the model's native area:

1. upscaled to the region's size (Lanczos);
2. refined there with img2img at ``hires_strength`` (the request's, else ``Family.hires_strength`` of the
   model's family, at most ``TILED_STRENGTH`` in tiles): in one piece up to 4x the native area, else
   in overlapping native-size tiles (``imaging.tiles.plan_refine``, run by the upscale's ``TileRefiner``).

For a selection the refined image is the original region with the first pass laid into the denoise
mask, and the second pass inpaints with that mask at region size (tiles the mask does not touch are
not run); compositing is unchanged, so pixels outside the selection's blend stay bit-exact.
Image ``i`` of a batch refines its own first pass with seed ``seed + i``. The ControlNet guide
steers the first pass only (the second keeps the composition it made);
regional prompts steer both (each tile gets the regions that cover it, ``prompt_regions``). docs/imaging.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..client.protocol import GenerateRequest
from .demo.notes import enlarged_sketch
from .engine.types import CancelledFn, EngineAPI, ModelInfo
from .families import Family
from .imaging.compose import region_selection, region_source, resize
from .imaging.fill import fill_transparent
from .imaging.masks import denoise_mask
from .imaging.region import WorkPlan
from .imaging.tiles import plan_refine
from .prompt_regions import region_masks
from .upscale import DEFAULT_STRENGTH, TileRefiner
from .work import StepBar, black_out

#: In tiles at most the tiled upscale's strength: each tile sees only part of the picture, and more
#: would let every tile paint the prompt's subject again.
TILED_STRENGTH = DEFAULT_STRENGTH
NAME = "second pass"


def hires_strength(request: GenerateRequest, model: ModelInfo, tiled: bool = False) -> float:
    """The request's ``hires_strength``, else the model family's default (at most ``TILED_STRENGTH`` in tiles)."""
    if request.hires_strength is not None:
        return request.hires_strength
    strength = model.family.hires_strength
    return min(strength, TILED_STRENGTH) if tiled else strength


def second_pass_wanted(request: GenerateRequest, plan: WorkPlan, family: Family) -> bool:
    """A work size well below the region, and ``hires: on``, or ``auto`` for a family that profits
    (``Family.second_pass_auto``; never with ``exact_size``: it runs 1:1)."""
    if request.exact_size or not plan.wants_second_pass:
        return False
    return request.hires == "on" or (request.hires == "auto" and family.second_pass_auto)


def skipped_note(request: GenerateRequest, plan: WorkPlan, family: Family) -> str | None:
    """What the painter is told when ``auto`` skips the second pass of a toy model (None: not skipped)."""
    if request.exact_size or not plan.wants_second_pass or request.hires != "auto" or family.second_pass_auto:
        return None
    return enlarged_sketch(plan.work, plan.region.extent)


class SecondPass:
    """The second pass of one generation: planned before the first pass runs (its tiles and steps do
    not depend on the pixels), run on the first pass's images."""

    def __init__(self, engine: EngineAPI, request: GenerateRequest, model: ModelInfo, plan: WorkPlan, image: Any,
                 mask: Any, seeds: list[int], attached: dict[str, np.ndarray] | None = None):
        self.plan = plan
        self.original: np.ndarray | None = None  # the region, transparency filled (selections)
        self.mask: np.ndarray | None = None  # the denoise mask at region size (selections)
        if plan.mode == "inpaint" and image is not None and mask is not None:
            self.mask = denoise_mask(region_selection(plan, mask), plan.grow, plan.feather)
            self.original = fill_transparent(region_source(plan, image))
        tiles = plan_refine(plan.region.extent, model.native)
        strength = hires_strength(request, model, tiled=tiles.count > 1)
        regions = region_masks(request, attached or {}, plan.region, plan.region.extent)  # regional prompts
        self.refiner = TileRefiner(engine, request, model, tiles, seeds, strength, self.mask, NAME, per_seed=True,
                                   regions=regions)

    @property
    def total(self) -> int:
        """Denoising steps the second pass takes (all tiles, all images)."""
        return self.refiner.total()

    def sources(self, first: list[Any]) -> list[np.ndarray]:
        """The images to refine: each first pass upscaled to the region (Lanczos); for a selection,
        laid into the original region through the denoise mask."""
        big = [resize(np.asarray(img.convert("RGB")), self.plan.region.extent) for img in first]
        if self.mask is None or self.original is None:
            return big
        weight = self.mask[..., None].astype(np.uint16)  # 255 * 255 + 127 fits 16 bits
        keep = self.original.astype(np.uint16) * (255 - weight)
        return [((keep + b * weight + 127) // 255).astype(np.uint8) for b in big]

    def run(self, first: list[Any], bar: StepBar, cancelled: CancelledFn) -> tuple[list[np.ndarray], list[bool] | None]:
        """One refined RGB image per seed at the region's size, and the safety checker's flags per seed
        (None without a checker): a first pass or any tile flagged blacks out the whole image."""
        images, _, _ = self.refiner.run(self.sources(first), bar, cancelled)
        flagged = self.refiner.flagged
        if flagged is None:
            return images, None
        flagged = [tile or bool(img.info.get("easel", {}).get("nsfw")) for tile, img in zip(flagged, first, strict=True)]
        return black_out(images, flagged), flagged

    def parameters(self) -> dict[str, Any]:
        """``second_pass`` in the result parameters (the PNG text's ``Hires upscale`` …)."""
        tiles = self.refiner.plan
        return {"upscale": round(self.plan.upscale, 2), "size": list(self.plan.region.extent),
                "strength": self.refiner.strength, "tile": list(tiles.tile), "tiles": len(self.refiner.active),
                "grid": [len(tiles.xs), len(tiles.ys)]}
