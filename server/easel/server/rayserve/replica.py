"""The engine in a Ray Serve replica: one ``Engine`` per replica, one job at a time, streamed back.

A job is one streaming call (``generate``): it yields ``("started", pid)``, then ``("progress", …)``
items with previews as raw RGB arrays, and ends with ``("done", GenerationOutput)`` (numpy layers:
Ray's own serialization, no PNG round trip), ``("cancelled",)`` or ``("error", code, message, field)``.
When the caller cancels the call or goes away, the generator is closed and the run stops at its next
step. Models are multiplexed (``serve.multiplexed``): Ray routes a job to a replica that served its
model before, as the local workers prefer the worker with the model loaded.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import ray
from ray import serve

from ...client.protocol import GenerateRequest, ProtocolError
from ..engine.types import EngineError, JobCancelled, Progress
from ..generation import run_generation
from ..work import Inputs


class EaselReplica:
    """One replica: an Engine built from ``engine_kwargs`` (the same as ``easel serve``'s)."""

    def __init__(self, engine_kwargs: dict[str, Any], threads: int | None = None, preload: bool = True):
        import torch

        from ..engine import Engine

        if threads:
            torch.set_num_threads(threads)
        self.engine = Engine(**engine_kwargs)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="easel-replica")
        if preload:
            self.engine.load(None)

    def describe(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "device": self.engine.device, "dtype": self.engine.dtype}

    async def model(self, model_id: str) -> str:
        """Multiplexing's loader: the Engine loads (with progress) on the job's first run; its LRU
        holds as many models as Ray's."""
        return model_id

    async def generate(self, request: GenerateRequest, inputs: Inputs, model_id: str) -> AsyncIterator[tuple]:
        await self.model(serve.get_multiplexed_model_id() or model_id)
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[tuple] = asyncio.Queue()
        stop = threading.Event()

        def progress(p: Progress) -> None:
            preview = None if p.preview is None else np.asarray(p.preview.convert("RGB"))
            loop.call_soon_threadsafe(items.put_nowait, ("progress", p.stage, p.step, p.total, p.message, preview))

        def work() -> tuple:
            try:
                model = self.engine.model_info(model_id)
                return ("done", run_generation(self.engine, request, inputs, model, progress, stop.is_set))
            except JobCancelled:
                return ("cancelled",)
            except (EngineError, ProtocolError) as exc:
                return ("error", exc.code, str(exc), exc.field)

        context = ray.get_runtime_context()
        yield ("started", os.getpid(), context.get_actor_name(), context.namespace)
        future = loop.run_in_executor(self.pool, work)
        future.add_done_callback(lambda _: items.put_nowait(("end",)))
        try:
            while (item := await items.get())[0] != "end":
                yield item
            yield future.result()
        finally:
            stop.set()  # cancelled or abandoned: the run stops at its next step


def deployment(max_loaded: int, replicas: tuple[int, int], num_gpus: float, num_cpus: float) -> Any:
    """The Serve deployment: fixed ``replicas`` (min == max) or autoscaling between them."""
    cls = type("EaselReplica", (EaselReplica,), {})
    cls.model = serve.multiplexed(max_num_models_per_replica=max_loaded)(EaselReplica.model)
    low, high = replicas
    scale: dict[str, Any] = ({"num_replicas": low} if low == high else
                             {"autoscaling_config": {"min_replicas": low, "max_replicas": high,
                                                     "target_ongoing_requests": 1}})
    return serve.deployment(cls, name="easel-engine", max_ongoing_requests=1,
                            ray_actor_options={"num_gpus": num_gpus, "num_cpus": num_cpus}, **scale)
