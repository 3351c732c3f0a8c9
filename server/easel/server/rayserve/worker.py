"""The front door's side of Ray: ``RayWorker`` slots, each sending one job at a time to the replicas.

Faults (issue #19): a replica that dies mid-job (its stream breaks) or hangs (no item within
``step_timeout``; the first within ``start_timeout``; a hung one is killed, Ray Serve replaces it) is
given up on and the job is sent once more, which Ray routes to a live replica; a second failure is a
clear ``worker_failed`` error. (A head that went away also ends this process when it takes this
machine's raylet: docs/scaling.md.) Cancel is checked every ``POLL_S``: the call is cancelled, the
replica stops at its next step.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from PIL import Image

from ...client.protocol import GenerateRequest
from ..engine.types import CancelledFn, EngineError, JobCancelled, ModelInfo, Progress, ProgressFn
from ..jobs import Job
from ..work import GenerationOutput, Inputs

log = logging.getLogger(__name__)
POLL_S = 0.02  # how often a waiting job checks for cancel


class ReplicaLost(Exception):
    """The replica running a job died, hung or could not be reached."""


class RayWorker:
    """One slot of the front door's fair queue: jobs go to Ray Serve replicas, one at a time.

    ``engine`` is the front door's catalogue (model ids, features; it loads no model)."""

    def __init__(self, name: str, handle: Any, engine: Any, start_timeout: float = 120.0,
                 step_timeout: float = 120.0):
        self.name, self.handle, self.engine = name, handle, engine
        self.start_timeout, self.step_timeout = start_timeout, step_timeout
        self.running: Job | None = None
        self.replica_pid: int | None = None  # the replica process running this slot's job (tests, logs)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"easel-{name}")

    def generate(self, request: GenerateRequest, inputs: Inputs, model: ModelInfo, progress: ProgressFn,
                 cancelled: CancelledFn) -> GenerationOutput:
        for attempt in (1, 2):
            try:
                return self._once(request, inputs, model, progress, cancelled)
            except ReplicaLost as exc:
                if cancelled():
                    raise JobCancelled() from None
                if attempt == 2:
                    raise EngineError(f"the Ray replicas failed this job twice ({exc}); it was not finished — "
                                      "try again, and check the Ray cluster (docs/scaling.md)",
                                      code="worker_failed") from None
                log.warning("job %s: %s; sending it once more", request.job, exc)
        raise AssertionError("unreachable")

    def _once(self, request: GenerateRequest, inputs: Inputs, model: ModelInfo, progress: ProgressFn,
              cancelled: CancelledFn) -> GenerationOutput:
        self.replica_pid = None
        items: queue.Queue[tuple] = queue.Queue()
        call: list[Any] = []

        def pump() -> None:  # the stream, read on its own thread so waits can time out
            try:
                stream = self.handle.options(stream=True, multiplexed_model_id=model.id).generate.remote(
                    request, inputs, model.id)
                call.append(stream)
                for item in stream:
                    items.put(item)
                items.put(("eof",))
            except Exception as exc:  # noqa: BLE001 - a dead replica or cluster, reported to the job
                items.put(("lost", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"))

        threading.Thread(target=pump, daemon=True, name=f"easel-{self.name}-stream").start()

        def stop() -> None:
            if call:
                try:
                    call[0].cancel()
                except Exception:  # noqa: BLE001 - best effort on a dead replica
                    pass

        replica: tuple = ()
        deadline = time.monotonic() + self.start_timeout
        while True:
            if cancelled():
                stop()
                raise JobCancelled()
            try:
                item = items.get(timeout=POLL_S)
            except queue.Empty:
                if time.monotonic() > deadline:
                    stop()
                    _kill_replica(replica)
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


def _kill_replica(replica: tuple) -> None:
    """A replica that stopped answering is killed (Ray Serve starts a new one), so the job's second try
    and later jobs are not routed to it. Best effort, on its own thread: the head may be gone too."""
    if not replica or not replica[0]:
        return

    def kill() -> None:
        try:
            import ray

            ray.kill(ray.get_actor(replica[0], namespace=replica[1]), no_restart=False)
            log.warning("killed the unresponsive Ray replica %s", replica[0])
        except Exception:  # noqa: BLE001
            log.warning("could not kill the unresponsive Ray replica %s", replica[0], exc_info=True)

    threading.Thread(target=kill, daemon=True).start()
