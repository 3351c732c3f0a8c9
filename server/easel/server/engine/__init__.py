"""Easel's diffusers engine: model loading, the LRU of loaded models, and running jobs.

``Engine`` is the only entry point the server needs; the types live in ``easel.server.engine.types``.
``Engine`` is imported lazily, so ``import easel.server.engine.types`` stays free of torch and diffusers.
docs/models.md describes model references, families, defaults, dtypes and memory options.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .types import CancelledFn, EngineError, EngineJob, JobCancelled, ModelInfo, Progress, ProgressFn

if TYPE_CHECKING:
    from .engine import Engine



class _TorchvisionFallbackFilter(logging.Filter):
    """Drop transformers' "`XImageProcessor` requires torchvision (not installed); falling back to
    `XImageProcessorPil`" warnings. diffusers imports those processors at pipeline import, so every
    start printed three of them; the PIL fallback is what Easel wants (it never installs torchvision,
    whose PyPI build does not load beside a CPU torch), so the user cannot and need not act on them.
    Only exactly that message is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return "requires torchvision (not installed); falling back to" not in msg


logging.getLogger("transformers.utils.import_utils").addFilter(_TorchvisionFallbackFilter())

__all__ = ["Engine", "EngineError", "EngineJob", "JobCancelled", "ModelInfo", "Progress", "ProgressFn", "CancelledFn"]


def __getattr__(name: str) -> Any:
    if name == "Engine":
        from .engine import Engine

        return Engine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
