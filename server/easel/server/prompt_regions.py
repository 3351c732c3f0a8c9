"""A request's ``regions`` (regional prompts, docs/features.md) outside the engine: their masks checked at
submit time and laid out for the passes that run in tiles.

A region's mask covers the same pixels as ``image`` (text to image: the requested size), like a control
layer's guide: the first pass gets it cropped to the work region and scaled with the image
(``features.prepare_control``: RGB over black, so gray values and alpha both weight). The second pass and
the tiled upscale refine in tiles: each tile gets the regions whose mask covers some of it, their masks
cropped to the tile (``TileRegions``); the engine turns a mask into weights (engine/regional.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image as PILImage

from ..client.protocol import GenerateRequest, Image, ProtocolError
from .imaging.compose import as_rgba, resize
from .imaging.geometry import Bounds, Extent
from .imaging.tiles import TilePlan


def check_regions(request: GenerateRequest, images: dict[str, Image]) -> None:
    """Cheap checks at submit time: each region's mask has the size of ``image`` when one is sent."""
    image = images.get("image")
    for i, region in enumerate(request.regions or []):
        mask = images.get(region.mask)
        if image is not None and mask is not None and (mask.width, mask.height) != (image.width, image.height):
            raise ProtocolError(f"region {i + 1}'s mask {region.mask!r} is {mask.width}x{mask.height} but 'image' is "
                                f"{image.width}x{image.height}; send the mask at the size of the image",
                                field=f"regions[{i}].mask")


def gray(rgba: np.ndarray) -> np.ndarray:
    """A mask image as HxW uint8 weights: its luminance over black (transparent = 0)."""
    rgba = as_rgba(rgba)
    rgb = PILImage.fromarray(rgba[..., :3]).convert("L")
    return ((np.asarray(rgb, np.uint16) * rgba[..., 3] + 127) // 255).astype(np.uint8)


def region_masks(request: GenerateRequest, attached: dict[str, np.ndarray], box: Bounds | None,
                 size: Extent) -> dict[str, np.ndarray]:
    """Each region's mask (by attachment name) as HxW weights cropped to ``box`` (None: whole) and resized to
    ``size`` (bilinear)."""
    out = {}
    for region in request.regions or []:
        mask = gray(attached[region.mask])
        out[region.mask] = resize(mask[box.slices] if box is not None else mask, size, PILImage.Resampling.BILINEAR)
    return out


class TileRegions:
    """The request's regions tile by tile: each tile's engine job gets the regions whose mask covers some of
    the tile, with their masks cropped to it; a tile no region covers runs with the base prompt alone."""

    def __init__(self, request: GenerateRequest, plan: TilePlan, masks: dict[str, np.ndarray] | None):
        self.regions = request.regions or []
        self.crops = {name: plan.crops(mask) for name, mask in (masks or {}).items()}

    def job_fields(self, index: int | None) -> dict[str, Any]:
        """``regions`` and ``attached`` for tile ``index``'s job (None: a job for counting steps only)."""
        if index is None or not self.crops:
            return {"regions": None}
        regions = [r for r in self.regions if self.crops[r.mask][index].any()]
        attached = {r.mask: PILImage.fromarray(np.ascontiguousarray(self.crops[r.mask][index]), "L").convert("RGB")
                    for r in regions}
        return {"regions": regions or None, "attached": attached}
