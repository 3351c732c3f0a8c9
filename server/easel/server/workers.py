"""Workers: each runs one job at a time on its own thread, all fed by the app's one fair queue.

A ``LocalWorker`` owns an ``Engine`` on one device (its own model cache). ``easel serve --workers N``
makes N on the CPU, ``--device cuda:0,cuda:1`` one per GPU; ``easel serve --ray`` uses Ray workers
(easel.server.ray) that send jobs to Ray Serve replicas instead. ``pick_worker`` sends a job
preferably to an idle worker that already has its model loaded.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..client.protocol import GenerateRequest
from .engine.types import CancelledFn, ModelInfo, ProgressFn
from .generation import run_generation
from .jobs import Job
from .work import GenerationOutput, Inputs

#: One model load at a time in this process: diffusers' low-memory loading patches torch.nn.Module
#: process-wide while it builds a model (accelerate's ``init_empty_weights``), so two loads at once on
#: two workers' threads can leave one model's weights on the meta device.
LOADING = threading.Lock()


class LocalWorker:
    """One engine on one device, run on its own thread."""

    def __init__(self, name: str, engine: Any):
        self.name, self.engine = name, engine
        self.running: Job | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"easel-{name}")

    def generate(self, request: GenerateRequest, inputs: Inputs, model: ModelInfo, progress: ProgressFn,
                 cancelled: CancelledFn) -> GenerationOutput:
        if not self.has_loaded(model.id):
            with LOADING:
                self.engine.load(model.id, progress)
        return run_generation(self.engine, request, inputs, model, progress, cancelled)

    def has_loaded(self, model_id: str) -> bool:
        """Whether ``model_id`` is in this worker's model cache (ask only while it is idle)."""
        loaded = getattr(self.engine, "loaded_models", None)
        return bool(loaded is not None and model_id in loaded())

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "device": self.engine.device, "dtype": self.engine.dtype}

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


def pick_worker(idle: Sequence[Any], model_id: str) -> Any:
    """The idle worker for a job of ``model_id``: one with it loaded, else the first idle one."""
    for worker in idle:
        if worker.has_loaded(model_id):
            return worker
    return idle[0]
