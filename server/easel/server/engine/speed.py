"""Speed options for a loaded pipeline: channels_last memory layout and torch.compile (docs/performance.md).

* ``channels_last``: ``auto`` (the default) stores the convolution weights of the UNet, the VAE and any
  ControlNet channels-last when the model runs in bfloat16 on the CPU, where oneDNN's convolutions are
  much faster that way (measured by ``make bench-full``: the VAE decode, half of a short job, most);
  ``on`` / ``off`` force it. It changes no weights, only how they lie in memory; pixels move within the
  tolerance docs/performance.md gives, because the convolutions sum in another order.
* ``compile``: ``torch.compile`` (inductor) of the denoiser and the VAE decoder. Opt-in: the first job
  at each size compiles for minutes on a CPU (the job's progress says so); inductor's cache
  (``$TORCHINDUCTOR_CACHE_DIR``, by default under the user cache folder) makes later starts cheaper.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


def wants_channels_last(choice: str, device: str, dtype: str) -> bool:
    """Whether the ``channels_last`` choice turns the layout on for a model on ``device`` in ``dtype``."""
    if choice == "auto":
        return device == "cpu" and dtype == "bfloat16"
    return choice == "on"


def conv_modules(pipe: Any) -> list[torch.nn.Module]:
    """The pipeline's modules made of convolutions: UNet, VAE, ControlNet (SD3/Flux: only the VAE)."""
    names = ("unet", "vae", "controlnet")
    return [m for m in (getattr(pipe, n, None) for n in names) if isinstance(m, torch.nn.Module)]


def set_channels_last(pipe: Any) -> None:
    for module in conv_modules(pipe):
        module.to(memory_format=torch.channels_last)


def inductor_cache() -> str:
    """Where compiled kernels are kept across restarts: ``$TORCHINDUCTOR_CACHE_DIR`` or the user cache."""
    folder = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not folder:
        from platformdirs import user_cache_path

        folder = str(Path(user_cache_path("easel")) / "torchinductor")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
    return folder


def compile_pipeline(pipe: Any) -> None:
    """Compile the denoiser (UNet or transformer) and the VAE decoder in place (``Module.compile``)."""
    cache = inductor_cache()
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    for module in (denoiser, getattr(pipe.vae, "decoder", None)):
        if isinstance(module, torch.nn.Module):
            module.compile()
    log.info("torch.compile on: the first job at each size compiles (kernels cached in %s)", cache)


class CompiledShapes:
    """The job shapes a compiled model has run, to tell a painter when a job will compile first."""

    def __init__(self) -> None:
        self._seen: set[tuple[Any, ...]] = set()

    def note(self, mode: str, width: int, height: int, batch: int) -> str:
        """A progress message when (mode, size, batch) is new, else ""; remembers it."""
        key = (mode, width, height, batch)
        if key in self._seen:
            return ""
        self._seen.add(key)
        return (f"compiling the model for {width}×{height} (--compile: the first job at a new size takes minutes "
                "on a CPU; later ones are fast)")
