"""Easel's diffusers engine: model loading, the LRU of loaded models, and running jobs.

``Engine`` is the only entry point the server needs; the types live in ``server.engine.types``.
``Engine`` is imported lazily, so ``import server.engine.types`` stays free of torch and diffusers.
docs/models.md describes model references, families, defaults, dtypes and memory options.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .types import CancelledFn, EngineError, EngineJob, JobCancelled, ModelInfo, Progress, ProgressFn

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["Engine", "EngineError", "EngineJob", "JobCancelled", "ModelInfo", "Progress", "ProgressFn", "CancelledFn"]


def __getattr__(name: str) -> Any:
    if name == "Engine":
        from .engine import Engine

        return Engine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
