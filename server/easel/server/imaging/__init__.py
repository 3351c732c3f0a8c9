"""Selection-based regeneration as pure, testable imaging code (docs/imaging.md).

Flow for one request::

    plan = plan_generation(request, image, mask, model.native)     # or plan_work / plan_txt2img
    work_image, work_mask = prepare(plan, image, mask)         # RGB + L at plan.work size
    ...engine runs at plan.work.width x plan.work.height...
    layer = composite(plan, image, mask, generated)            # RGBA + document x, y

Modules: ``geometry`` (Extent, Bounds), ``region`` (WorkPlan; the send-region rule it shares
with the plugins lives client-side in ``easel.client.send_region``), ``masks`` (grow/feather, denoise and composite
masks), ``fill`` (transparency fill), ``compose`` (prepare, composite, flatten),
``metrics`` (seam quality, detail), ``tiles`` (tiled upscale and the second pass: tile plans
and blending). Names
below are imported lazily so that importing ``easel.client.send_region`` or
``easel.server.imaging.geometry`` never pulls in numpy.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Extent": "geometry", "Bounds": "geometry",
    "WorkPlan": "region", "plan_work": "region", "plan_txt2img": "region", "plan_generation": "region",
    "work_size": "region", "native_size": "region",
    "dilate": "masks", "erode": "masks", "blur": "masks", "denoise_mask": "masks", "composite_mask": "masks",
    "fill_transparent": "fill",
    "LayerResult": "compose", "prepare": "compose", "composite": "compose", "flatten": "compose",
    "seam_ratio": "metrics", "detail": "metrics",
    "TilePlan": "tiles", "plan_tiles": "tiles", "plan_refine": "tiles", "TileBlender": "tiles",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
