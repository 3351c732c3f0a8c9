"""Scheduler names (protocol.SCHEDULERS) -> diffusers schedulers built from a model's own config.

Every run gets a fresh scheduler made with ``X.from_config(original_config, **overrides)``, so the
model's scheduler is never mutated and its settings (beta schedule, prediction type, timestep
spacing of turbo models, ...) carry over.
"""

from __future__ import annotations

from typing import Any

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
)

from ...client.protocol import SCHEDULERS
from .types import EngineError

_TABLE: dict[str, tuple[type, dict[str, Any]]] = {
    "euler": (EulerDiscreteScheduler, {"use_karras_sigmas": False}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler,
                 {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False}),
    "dpmpp_2m_karras": (DPMSolverMultistepScheduler,
                        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    "ddim": (DDIMScheduler, {}),
    "lcm": (LCMScheduler, {}),
}
assert tuple(_TABLE) == tuple(SCHEDULERS), "scheduler table out of sync with protocol.SCHEDULERS"


def scheduler_names() -> list[str]:
    return list(SCHEDULERS)


def make_scheduler(name: str | None, original: Any) -> Any:
    """A new scheduler: ``name``'s class (or the original's class when None) from the original config."""
    if name is None:
        return type(original).from_config(original.config)
    if type(original).__name__.startswith("FlowMatch"):
        if name == "euler":  # flow matching's Euler is the model's own scheduler
            return type(original).from_config(original.config)
        raise EngineError(f"scheduler {name!r} does not fit this flow-matching model (SD 3/3.5, FLUX.1): it runs its "
                          "own FlowMatchEulerDiscreteScheduler; leave the scheduler unset or use 'euler'",
                          field="scheduler")
    if name not in _TABLE:
        raise EngineError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}", field="scheduler")
    cls, overrides = _TABLE[name]
    return cls.from_config(original.config, **overrides)
