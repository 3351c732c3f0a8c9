"""The front door's side of Ray: ``RayWorker`` slots, each sending one job at a time to the replicas
through the Ray driver process (``driver.RayDriver``).

Faults: a replica that dies mid-job (its stream breaks) or hangs (no item within
``step_timeout``; the first within ``start_timeout``; a hung one is killed, Ray Serve replaces it) is
given up on and the job is sent once more, which Ray routes to a live replica; a second failure is a
clear ``worker_failed`` error. When the driver process is gone (the cluster's head went away), the job
and every new one fail at once with ``worker_failed`` and the driver's message (cause and fix), and a
new job makes the cluster start a new driver (``RayCluster.revive``). Cancel
is checked every ``POLL_S``: the call is cancelled, the replica stops at its next step.
"""

from __future__ import annotations

import logging
import queue
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from PIL import Image

from ...client.codes import ErrorCode
from ...client.protocol import GenerateRequest
from ..engine.types import CancelledFn, EngineAPI, EngineError, JobCancelled, ModelInfo, Progress, ProgressFn
from ..jobs import Job
from ..work import GenerationOutput, Inputs

log = logging.getLogger(__name__)
POLL_S = 0.02  # how often a waiting job checks for cancel


class ReplicaLost(Exception):
    """The replica running a job died, hung or could not be reached."""


class RayWorker:
    """One slot of the front door's fair queue: jobs go to Ray Serve replicas, one at a time.

    ``driver`` is the ``RayDriver``; ``engine`` the front door's catalogue (model ids, features; it loads
    no model)."""

    def __init__(self, name: str, driver: Any, engine: EngineAPI, start_timeout: float = 120.0,
                 step_timeout: float = 120.0):
        self.name, self.driver, self.engine = name, driver, engine
        self.start_timeout, self.step_timeout = start_timeout, step_timeout
        self.running: Job | None = None
        self.replica_pid: int | None = None  # the replica process running this slot's job (tests, logs)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"easel-{name}")

    def generate(self, request: GenerateRequest, inputs: Inputs, model: ModelInfo, progress: ProgressFn,
                 cancelled: CancelledFn) -> GenerationOutput:
        for attempt in (1, 2):
            if self.driver.down:
                self.driver.revive()
                raise EngineError(self.driver.down, code=ErrorCode.WORKER_FAILED)
            try:
                return self._once(request, inputs, model, progress, cancelled)
            except ReplicaLost as exc:
                if cancelled():
                    raise JobCancelled() from None
                if self.driver.down:
                    raise EngineError(self.driver.down, code=ErrorCode.WORKER_FAILED) from None
                if attempt == 2:
                    raise EngineError(f"the Ray replicas failed this job twice ({exc}); it was not finished — "
                                      "try again, and check the Ray cluster (docs/scaling.md)",
                                      code=ErrorCode.WORKER_FAILED) from None
                log.warning("job %s: %s; sending it once more", request.job, exc)
        raise AssertionError("unreachable")

    def _once(self, request: GenerateRequest, inputs: Inputs, model: ModelInfo, progress: ProgressFn,
              cancelled: CancelledFn) -> GenerationOutput:
        self.replica_pid = None
        call = self.driver.stream(request, inputs, model.id)
        try:
            return self._follow(call, progress, cancelled)
        finally:
            call.close()

    def _follow(self, call: Any, progress: ProgressFn, cancelled: CancelledFn) -> GenerationOutput:
        """The call's items to progress and the result; cancel, timeouts and a lost call as exceptions."""
        replica: tuple = ()
        deadline = time.monotonic() + self.start_timeout
        while True:
            if cancelled():
                call.cancel()
                raise JobCancelled()
            try:
                item = call.items.get(timeout=POLL_S)
            except queue.Empty:
                if time.monotonic() > deadline:
                    call.cancel()
                    if replica and replica[0]:
                        self.driver.kill_replica(*replica)
                    raise ReplicaLost(f"no answer from the Ray replica for {self._waited(deadline):.0f} s "
                                      "(hung, or the cluster's head is gone)") from None
                continue
            deadline = time.monotonic() + self.step_timeout
            kind = item[0]
            if kind == "started":
                self.replica_pid, replica = item[1], item[2:]
            elif kind == "progress":
                _, stage, step, total, message, preview = item
                progress(Progress(stage, step, total, message,
                                  None if preview is None else Image.fromarray(preview, "RGB")))
            elif kind == "done":
                return item[1]
            elif kind == "cancelled":
                raise JobCancelled()
            elif kind == "error":
                raise EngineError(item[2], field=item[3], code=item[1])
            elif kind == "lost":
                raise ReplicaLost(item[1])
            else:
                raise ReplicaLost("the replica's stream ended without a result")

    def _waited(self, deadline: float) -> float:
        return time.monotonic() - deadline + (self.step_timeout if self.replica_pid else self.start_timeout)

    def has_loaded(self, model_id: str) -> bool:
        return False  # Ray routes by model (multiplexing); every slot is alike

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "device": "ray", "dtype": self.engine.dtype}

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)

