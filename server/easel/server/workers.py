"""Workers: each runs one job at a time on its own thread, all fed by the app's one fair queue.

A ``LocalWorker`` owns an ``Engine`` on one device (its own model cache). ``easel serve --workers N``
makes N on the CPU, ``--device cuda:0,cuda:1`` one per GPU; ``easel serve --ray`` uses Ray workers
(easel.server.ray) that send jobs to Ray Serve replicas instead. ``pick_worker`` sends a job
preferably to an idle worker that already has its model loaded. ``LocalWorker.preload`` loads the
default model in the background while the server already listens; a job that comes meanwhile waits for
it and is shown its progress.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from ..client.protocol import GenerateRequest
from .engine.types import CancelledFn, EngineAPI, JobCancelled, ModelInfo, Progress, ProgressFn
from .generation import run_generation
from .jobs import Job
from .work import GenerationOutput, Inputs

#: One model load at a time in this process: diffusers' low-memory loading patches torch.nn.Module
#: process-wide while it builds a model (accelerate's ``init_empty_weights``), so two loads at once on
#: two workers' threads can leave one model's weights on the meta device.
LOADING = threading.Lock()


class Worker(Protocol):
    """What the app asks of a worker: ``LocalWorker`` here, ``rayserve.worker.RayWorker`` for Ray Serve."""

    name: str
    engine: EngineAPI  # for the model list; a Ray worker's engine only describes the replicas' models
    running: Job | None
    executor: ThreadPoolExecutor  # runs ``generate``, one job at a time

    def generate(self, request: GenerateRequest, inputs: Inputs, model: ModelInfo, progress: ProgressFn,
                 cancelled: CancelledFn) -> GenerationOutput:
        """One job, end to end; JobCancelled within a step of ``cancelled()``."""
        ...

    def has_loaded(self, model_id: str) -> bool: ...

    def info(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class LocalWorker:
    """One engine on one device, run on its own thread."""

    def __init__(self, name: str, engine: EngineAPI):
        self.name, self.engine = name, engine
        self.running: Job | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"easel-{name}")
        self._preload: Preload | None = None

    def preload(self, model_id: str | None, progress: ProgressFn) -> Preload:
        """Start loading ``model_id`` (None: the default) on a background thread; errors are kept, not raised
        (a job for the model then loads it itself and reports the error to its painter)."""
        self._preload = Preload(lambda say: self.engine.load(model_id, say), progress)
        return self._preload

    def generate(self, request: GenerateRequest, inputs: Inputs, model: ModelInfo, progress: ProgressFn,
                 cancelled: CancelledFn) -> GenerationOutput:
        if self._preload is not None:
            self._preload.wait(progress, cancelled)
            self._preload = None
        if not self.has_loaded(model.id):
            while not LOADING.acquire(timeout=0.1):  # another worker's load may take minutes: cancellable wait
                if cancelled():
                    raise JobCancelled()
            try:
                if cancelled():
                    raise JobCancelled()
                self.engine.load(model.id, progress)
            finally:
                LOADING.release()
        return run_generation(self.engine, request, inputs, model, progress, cancelled)

    def has_loaded(self, model_id: str) -> bool:
        """Whether ``model_id`` is in this worker's model cache (ask only while it is idle)."""
        loaded = getattr(self.engine, "loaded_models", None)
        return bool(loaded is not None and model_id in loaded())

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "device": self.engine.device, "dtype": self.engine.dtype}

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


class Preload:
    """A model load on its own thread (holding ``LOADING``) whose progress goes to the start-up display and
    to any job that waits for it."""

    def __init__(self, load: Any, progress: ProgressFn):
        self._watchers: list[ProgressFn] = [progress]
        self._last: Progress | None = None
        self._lock = threading.Lock()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(load,), name="easel-preload", daemon=True)
        self._thread.start()

    def _say(self, p: Progress) -> None:
        with self._lock:
            self._last, watchers = p, list(self._watchers)
        for watch in watchers:
            watch(p)

    def _run(self, load: Any) -> None:
        try:
            with LOADING:
                load(self._say)
        except BaseException as exc:  # kept for whoever asks; the job's own load reports it
            self.error = exc

    def wait(self, progress: ProgressFn, cancelled: CancelledFn) -> None:
        """Block until the load ends, passing its latest and further progress to ``progress``; JobCancelled
        when ``cancelled()`` turns true meanwhile (the load goes on)."""
        with self._lock:
            self._watchers.append(progress)
            last = self._last
        try:
            if last is not None:
                progress(last)
            while self._thread.is_alive():
                if cancelled():
                    raise JobCancelled()
                self._thread.join(0.1)
        finally:
            with self._lock:
                self._watchers.remove(progress)

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()


def pick_worker(idle: Sequence[Worker], model_id: str) -> Worker:
    """The idle worker for a job of ``model_id``: one with it loaded, else the first idle one."""
    for worker in idle:
        if worker.has_loaded(model_id):
            return worker
    return idle[0]
