"""One job on a worker thread: decode, generate (on whichever worker runs it), encode the reply.

``execute`` is the same for every kind of worker; only ``worker.generate`` differs (a local engine,
or a Ray Serve replica in another process, easel.server.rayserve). Returns the reply to send and, when
the result is to be kept, the layers to save first.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..client.codes import ServerMessage
from ..client.protocol import Image, ProtocolError, error_message
from .codec import encode
from .engine.types import EngineError, JobCancelled, Progress
from .generation import decode_inputs
from .jobs import Job
from .limits import Limits
from .results import ResultStore, keeps_result
from .workers import Worker

Reply = tuple[dict[str, Any], dict[str, Image] | None]
#: posts a progress message to the job's owner: (message, attachments or None); ``wants_preview()``
PostFn = Callable[[dict[str, Any], dict[str, Image] | None], None]


def execute(worker: Worker, job: Job, limits: Limits, store: ResultStore | None, image_format: Callable[[], str],
            wants_preview: Callable[[], bool], post: PostFn) -> tuple[Reply, list[np.ndarray] | None]:
    """Run ``job`` on ``worker`` (blocking; call it on the worker's thread)."""
    request = job.request

    def progress(p: Progress) -> None:
        message = {"type": ServerMessage.PROGRESS, "job": job.id, "stage": p.stage, "step": p.step,
                   "total": p.total, "message": p.message}
        attachments = None
        if p.preview is not None and wants_preview():
            attachments = {"preview": encode(np.asarray(p.preview.convert("RGB")), image_format())}
        post(message, attachments)

    t0 = time.perf_counter()
    try:
        inputs = decode_inputs(request, job.images, limits)
        model = worker.engine.model_info(request.model)
        output = worker.generate(request, inputs, model, progress, job.cancelled)
    except JobCancelled:
        return (cancelled_message(job), None), None
    except (EngineError, ProtocolError) as exc:
        return (error_message(exc.code, str(exc), exc.field, job.id), None), None
    if job.cancelled():  # cancelled after its last step: stale, never delivered
        return (cancelled_message(job), None), None
    t1 = time.perf_counter()
    fmt = image_format()
    attachments = {f"image{i}": encode(layer.rgba, fmt) for i, layer in enumerate(output.layers)}
    timings = {"queued_s": (job.started or t0) - job.submitted, **output.timings,
               "encode_s": time.perf_counter() - t1, "total_s": time.perf_counter() - t0}
    images = [{"seed": layer.seed, "x": layer.x, "y": layer.y, "width": layer.rgba.shape[1],
               "height": layer.rgba.shape[0]} for layer in output.layers]
    meta = {"type": ServerMessage.RESULT, "job": job.id, "images": images, "parameters": output.parameters,
            "timings": {k: round(v, 4) for k, v in timings.items()}, "worker": worker.name}
    if keeps_result(store, job.id, request.replace):
        return (meta, attachments), [layer.rgba for layer in output.layers]  # saved, then sent
    return (meta, attachments), None


def cancelled_message(job: Job) -> dict[str, Any]:
    return {"type": ServerMessage.CANCELLED, "job": job.id, **({"reason": "replaced"} if job.replaced else {})}


def release_freed_memory() -> None:
    """Give memory freed by the last job back to the OS (glibc keeps it otherwise: +9% RSS
    across mode switches, 0.7% with this; ~4 ms, docs/performance.md)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc
