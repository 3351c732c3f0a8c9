"""Upscaler models (ESRGAN, Real-ESRGAN, SwinIR, HAT, DAT …) from the models folders, for the tiled upscale.

``Upscalers(library, device)`` lists the library's upscaler files (the welcome's ``upscalers``:
id, readable name, scale from the file name — ``4x_…``, ``…_x2`` — or from the model once loaded)
and runs one on an image to a factor (``upscale``): the model runs tiled (``tiled``) as many times
as its scale fits in the factor (a 2× model runs twice for ×4; at least once), then Lanczos makes
the exact size (a 4× model for ×2 runs once and is resized down). One model is kept loaded (the
last one used) until another is asked for or the server closes. fp32 on the CPU; on a GPU fp16
where the architecture supports it.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...client.codes import ErrorCode
from ..engine.types import CancelledFn, EngineError
from ..imaging.compose import resize
from ..imaging.geometry import Extent
from ..library.scan import Entry, Library
from . import load, tiled

_SCALE = re.compile(r"(?:^|[^a-z0-9])(?:([1-8])x|x([1-8]))(?![0-9])", re.IGNORECASE)
Report = tiled.TileReport


def scale_from_name(name: str) -> int | None:
    """The scale a file name says (``4x_foo``, ``4xNomos``, ``RealESRGAN_x4plus``, ``…-x2``), or None."""
    match = _SCALE.search(os.path.basename(name))
    return int(match.group(1) or match.group(2)) if match else None


def passes(scale: int, factor: int) -> int:
    """How many times a ``scale``× model runs for ``factor``: the most whose total stays within it, at least 1."""
    count = 1
    while scale > 1 and scale ** (count + 1) <= factor:
        count += 1
    return count


@dataclass
class _Loaded:
    path: str
    stamp: tuple[int, int]
    model: Any
    dtype: Any


class Upscalers:
    """The upscalers of a models library and the one loaded (module doc)."""

    def __init__(self, library: Library | None, device: str = "cpu"):
        self.library, self.device = library, device
        self._lock = threading.Lock()
        self._loaded: _Loaded | None = None
        self._scales: dict[str, int] = {}  # path -> scale learned by loading

    def entries(self, fresh: bool = True) -> dict[str, Entry]:
        """Usable upscaler entries by id (the listing trusts the folder; loading checks the file)."""
        found = self.library.entries("upscaler", fresh=fresh) if self.library is not None else []
        return {e.id: e for e in found if e.problem is None}

    def ids(self) -> list[str]:
        return list(self.entries())

    def infos(self) -> list[dict[str, Any]]:
        """The welcome's ``upscalers``: ``{"id", "name", "scale"}`` (scale None: not known until loaded)."""
        return [{"id": i, "name": e.name, "scale": self._scales.get(e.path) or scale_from_name(e.path)}
                for i, e in self.entries().items()]

    def check(self, name: str) -> None:
        """EngineError(field="upscaler") naming the choices when ``name`` is not one of them."""
        ids = self.ids()
        if name not in ids:
            choices = f"use one of {', '.join(ids)}" if ids else (
                "this server has none; put upscaler files (.pth/.safetensors) in a models folder's ESRGAN/ or "
                "upscale_models/ folder")
            raise EngineError(f"'upscaler' {name!r} is not an upscaler this server offers; {choices}",
                              field="upscaler", code=ErrorCode.BAD_REQUEST)

    def upscale(self, name: str, rgb: np.ndarray, factor: int, report: Report, cancelled: CancelledFn) -> np.ndarray:
        """``rgb`` (HxWx3 uint8) upscaled ``factor``× by the upscaler ``name`` (module doc)."""
        self.check(name)
        entry = self.entries(fresh=False)[name]
        height, width = rgb.shape[:2]
        with self._lock:
            loaded = self._load(entry)
            scale = loaded.model.scale
            count = passes(scale, factor)
            sizes = [(width * scale**k, height * scale**k) for k in range(count)]
            total = sum(tiled.tile_count(w, h) for w, h in sizes)
            done = 0

            def tile(k: int, _: int) -> None:
                report(done + k, total)

            out = rgb
            for w, h in sizes:
                out = tiled.run_tiled(loaded.model, out, scale, self.device, loaded.dtype, tile, cancelled)
                done += tiled.tile_count(w, h)
        return resize(out, Extent(width * factor, height * factor))

    def _load(self, entry: Entry) -> _Loaded:
        """The model of ``entry``, loaded unless it is the one kept (same file, unchanged)."""
        import torch

        st = os.stat(entry.path)
        stamp = (st.st_size, st.st_mtime_ns)
        if self._loaded is not None and self._loaded.path == entry.path and self._loaded.stamp == stamp:
            return self._loaded
        self._loaded = None  # one at a time: free the old one first
        model = load.load(entry.path, entry.id)
        dtype = torch.float16 if self.device != "cpu" and model.supports_half else torch.float32
        model.to(self.device).to(dtype)
        self._scales[entry.path] = model.scale
        self._loaded = _Loaded(entry.path, stamp, model, dtype)
        return self._loaded

    def close(self) -> None:
        """Unload the kept model."""
        with self._lock:
            self._loaded = None
