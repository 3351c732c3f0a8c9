"""The optional safety checker (off by default: Easel is a local painting tool).

With ``--safety-checker [REF]`` every result image goes through diffusers'
``StableDiffusionSafetyChecker`` (default REF: ``CompVis/stable-diffusion-safety-checker``; a folder
with its ``config.json``, weights and ``preprocessor_config.json``, or a pipeline folder with
``safety_checker/`` and ``feature_extractor/``). Flagged images are replaced by black and tagged
``nsfw: true`` in their parameters; the checker is loaded on the first job.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import numpy as np
from PIL import Image

from ...client.codes import ErrorCode
from .device import DTYPES
from .types import EngineError, Progress, ProgressFn

log = logging.getLogger(__name__)
DEFAULT_CHECKER = "CompVis/stable-diffusion-safety-checker"


class SafetyChecker:
    """Flags images with the Stable Diffusion safety checker; ``ref`` None = off."""

    def __init__(self, ref: str | os.PathLike | None, device: str, dtype: str):
        self.ref = os.fspath(ref) if ref is not None else None
        self.device, self.dtype = device, dtype
        self._model: Any = None
        self._processor: Any = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.ref is not None

    def _load(self, progress: ProgressFn) -> None:
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessor

        assert self.ref is not None
        location = os.path.expanduser(self.ref)
        sub: dict[str, dict[str, str]] = {"model": {}, "processor": {}}
        if os.path.isdir(os.path.join(location, "safety_checker")):
            sub = {"model": {"subfolder": "safety_checker"}, "processor": {"subfolder": "feature_extractor"}}
        progress(Progress("load", 0, 1, f"loading the safety checker {self.ref}"))
        try:
            model = StableDiffusionSafetyChecker.from_pretrained(location, **sub["model"])
            self._processor = CLIPImageProcessor.from_pretrained(location, **sub["processor"])
        except Exception as exc:
            raise EngineError(f"could not load the safety checker {self.ref!r}: {type(exc).__name__}: {str(exc)[:300]}; "
                              f"give a folder holding it or run `hf download {DEFAULT_CHECKER}` while online",
                              code=ErrorCode.MODEL_LOAD_FAILED) from None
        self._model = model.to(self.device, DTYPES[self.dtype]).eval()
        progress(Progress("load", 1, 1, "loaded the safety checker"))

    def apply(self, images: list[Image.Image], progress: ProgressFn) -> list[Image.Image]:
        """``images`` with flagged ones replaced by black; each tagged ``info["easel"]["nsfw"]``."""
        if not self.enabled or not images:
            return images
        import torch

        with self._lock:
            if self._model is None:
                self._load(progress)
            arrays = np.stack([np.asarray(img.convert("RGB"), np.float32) / 255.0 for img in images])
            clip_input = self._processor(images, return_tensors="pt").pixel_values
            with torch.no_grad():
                _, flags = self._model(images=arrays.copy(),
                                       clip_input=clip_input.to(self.device, DTYPES[self.dtype]))
        out = []
        for img, flagged in zip(images, flags):
            if flagged:
                info = img.info
                img = Image.new("RGB", img.size, (0, 0, 0))
                img.info.update(info)
            img.info["easel"] = {**img.info.get("easel", {}), "nsfw": bool(flagged)}
            out.append(img)
        if any(flags):
            log.info("safety checker: %d of %d images replaced by black", sum(map(bool, flags)), len(images))
        return out
