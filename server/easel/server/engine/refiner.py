"""SDXL base + refiner: the base model denoises up to ``refiner_switch`` and hands its latents over.

The refiner (``--refiner REF``: any model reference, e.g. ``stabilityai/stable-diffusion-xl-refiner-1.0``
or a folder) is loaded on the first job that asks for it, through the same loading code as every
model, and stays loaded beside the LRU of base models. Base: ``denoising_end=switch,
output_type="latent"``; refiner (its img2img or inpaint pipeline): ``image=latents,
denoising_start=switch`` with the same prompt, steps, guidance, generators and mask.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

from ...client.codes import ErrorCode
from .device import free_memory
from .loading import LoadedModel, LoadOptions, load_model
from .refs import ModelRef, parse_ref
from .types import CancelledFn, EngineError, EngineJob, ProgressFn

log = logging.getLogger(__name__)


class Refiner:
    """The configured refiner model (or none), loaded lazily."""

    def __init__(self, ref: str | os.PathLike | None, options: LoadOptions,
                 models_dir: str | Sequence[str] | None = None):
        self.ref: ModelRef | None = None
        if ref is not None:
            try:
                self.ref = parse_ref(os.fspath(ref), models_dir, confine=False)  # named at start-up
            except EngineError as exc:
                raise EngineError(f"refiner: {exc}", field="refiner") from None
        self._options = options
        self._loaded: LoadedModel | None = None
        self._lock = threading.Lock()

    def ids(self) -> list[str]:
        return [self.ref.id] if self.ref is not None else []

    def check(self, job: EngineJob, lm: LoadedModel | None = None) -> None:
        """EngineError (field refiner) when the job cannot use a refiner (on ``lm``, when given)."""
        if not job.refiner:
            return
        if self.ref is None:
            raise EngineError("no refiner is configured on this server; start it with --refiner REF (e.g. "
                              "stabilityai/stable-diffusion-xl-refiner-1.0) or turn the refiner off", field="refiner",
                              code=ErrorCode.NO_REFINER)
        if lm is not None and not lm.traits.family.takes_refiner:
            raise EngineError(f"the refiner works with SDXL models; {lm.ref.id!r} is {lm.traits.family}: pick an "
                              "SDXL model or turn the refiner off", field="refiner")

    def get(self, progress: ProgressFn, cancelled: CancelledFn) -> LoadedModel:
        with self._lock:
            if self._loaded is None:
                assert self.ref is not None
                try:
                    loaded = load_model(self.ref, self._options, progress, cancelled)
                except EngineError as exc:
                    raise EngineError(f"refiner: {exc}", field="refiner", code=exc.code) from None
                if not loaded.traits.family.takes_refiner:  # a refiner loads as the family it refines
                    loaded.release()
                    raise EngineError(f"refiner {self.ref.id!r} is not an SDXL model ({loaded.traits.family}); "
                                      "configure an SDXL refiner", field="refiner")
                self._loaded = loaded
                log.info("refiner %s loaded", self.ref.id)
            return self._loaded

    def close(self) -> None:
        with self._lock:
            if self._loaded is not None:
                self._loaded.release()
                self._loaded = None
                free_memory(self._options.device)


def base_kwargs(switch: float) -> dict[str, Any]:
    """Extra arguments for the base model's call: stop at ``switch`` and return latents."""
    return {"denoising_end": float(switch), "output_type": "latent"}


def refiner_kwargs(kwargs: dict[str, Any], latents: Any, switch: float) -> dict[str, Any]:
    """The refiner's call arguments from the base call's: its latents as image, starting at ``switch``."""
    keep = ("prompt", "negative_prompt", "num_inference_steps", "guidance_scale", "num_images_per_prompt", "generator",
            "width", "height", "mask_image", "strength", "callback_on_step_end", "callback_on_step_end_tensor_inputs")
    out = {k: kwargs[k] for k in keep if k in kwargs}
    out.update(image=latents, denoising_start=float(switch), output_type="np")
    return out
