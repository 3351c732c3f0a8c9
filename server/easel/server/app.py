"""The websocket app: connections, message dispatch, the fair queue feeding the workers.

Thin I/O around the sans-IO pieces: ``protocol.Assembler`` parses frames, ``jobs.JobQueue``
orders work, ``workers`` run it (one job at a time each: a local engine per device, or Ray Serve
replicas), ``execute`` is one job. Every bad request gets an ``error`` naming the field; the
connection and the server keep working.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import traceback
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from .. import __version__
from ..client.codes import ClientMessage, ErrorCode, ServerMessage
from ..client.protocol import (
    FORMAT_CODES,
    PROTOCOL_VERSION,
    Assembler,
    GenerateRequest,
    Image,
    Message,
    ProtocolError,
    check_version,
    error_message,
    job_of_frame,
)
from .connections import PREVIEW_BACKLOG, Connection
from .engine.types import EngineAPI, EngineError, ModelInfo
from .execute import execute, release_freed_memory
from .features import check_names
from .generation import check_attachments
from .jobs import LIVE_RESTART, Job, JobQueue, LivePacing, QueueFull
from .limits import Limits
from .preprocess.serve import answer as answer_preprocess
from .results import ResultStore, keeps_result
from .security import Security
from .stored import answer_stored
from .upscale import upscaler_infos
from .workers import LocalWorker, Worker, pick_worker

log = logging.getLogger(__name__)
#: seconds a kept running job of a client that left may go on while other jobs wait (docs/protocol.md)
ORPHAN_GRACE = 30.0
MAX_PREPROCESS = 4  # outstanding ``preprocess`` jobs per connection; one more gets QUEUE_FULL


class App:
    """Easel's websocket server around one engine, several (one worker each), or given workers.

    The first engine (or ``workers[0].engine``) answers model and feature questions; every worker
    must serve the same models.
    """

    def __init__(self, engine: EngineAPI | Sequence[EngineAPI] = (), limits: Limits | None = None,
                 store: ResultStore | None = None, security: Security | None = None,
                 live_restart: float = LIVE_RESTART, workers: Sequence[Worker] = (),
                 orphan_grace: float = ORPHAN_GRACE):
        engines = list(engine) if isinstance(engine, (list, tuple)) else [engine] if engine is not None else []
        self.workers: list[Worker] = list(workers) or [LocalWorker(f"w{i}", e) for i, e in enumerate(engines)]
        if not self.workers:
            raise ValueError("App needs an engine or workers")
        self.engine = self.workers[0].engine
        self.limits = limits or Limits()
        self.store = store
        self.security = security or Security()
        self.queue = JobQueue(self.limits.max_jobs_per_client)
        self.live = LivePacing(live_restart)  # when a newer live state may stop the running frame
        self.owners: dict[str, Connection] = {}  # job id -> connection, for queued and running jobs
        self.orphan_grace = orphan_grace  # how long a kept job of a gone client may hold a worker others wait for
        self._ids = itertools.count(1)
        self._wakeup = asyncio.Event()
        self._runs: set[asyncio.Task] = set()
        self._answers: set[asyncio.Task] = set()  # fetch/ack/history and preprocess answers (awaited on close)
        self._preprocessing: dict[Connection, set[asyncio.Task]] = {}  # each connection's outstanding guides
        # Results are saved on their own thread, so the inference worker starts the next job at once.
        self._saver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="easel-saver")
        self.finishing: set[str] = set()  # jobs done computing whose results are being saved
        self._finishers: set[asyncio.Task] = set()
        self._worker: asyncio.Task | None = None
        self.server: Server | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 8765) -> Server:
        self.security.check_bind(host)
        self._worker = asyncio.create_task(self._work_loop())
        self.server = await serve(self._handle, host, port, max_size=self.limits.max_message_bytes,
                                  compression=None, origins=self.security.origins(),
                                  process_request=self.security.process_request)
        return self.server

    @property
    def running(self) -> Job | None:
        """A running job (the first worker's that has one), or None when every worker is idle."""
        return next((w.running for w in self.workers if w.running is not None), None)

    def running_jobs(self) -> list[Job]:
        return [w.running for w in self.workers if w.running is not None]

    def running_job(self, job_id: str) -> Job | None:
        return next((j for j in self.running_jobs() if j.id == job_id), None)

    def take_over(self, job_id: str, conn: Connection) -> bool:
        """Hand the delivery of a running (or finishing) job to ``conn``, a client that reconnected and
        fetches it; False when no such job is running."""
        if self.running_job(job_id) is None and job_id not in self.finishing:
            return False
        self.owners[job_id] = conn
        return True

    def is_queued(self, job_id: str) -> bool:
        return job_id in self.queue

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for job in self.running_jobs():
            job.cancel_event.set()
        if self._worker is not None:
            self._worker.cancel()
        if self._runs or self._answers:
            await asyncio.gather(*self._runs, *self._answers, return_exceptions=True)
        if self._finishers:
            await asyncio.gather(*self._finishers, return_exceptions=True)
        for worker in self.workers:
            await asyncio.get_running_loop().run_in_executor(None, worker.close)
        self._saver.shutdown(wait=True)

    def welcome(self) -> dict[str, Any]:
        models: list[ModelInfo] = self.engine.models()
        return {
            "type": ServerMessage.WELCOME, "protocol": PROTOCOL_VERSION, "server": __version__,
            "device": self.engine.device, "dtype": self.engine.dtype,
            "models": [m.to_dict() for m in models], "default_model": models[0].id if models else None,
            "schedulers": list(self.engine.schedulers()), "limits": self.limits.to_dict(),
            "image_formats": sorted(FORMAT_CODES.keys() - {"gray"}),
            # power features (docs/features.md): what jobs may name in loras / control_model / refiner
            "loras": list(getattr(self.engine, "loras", list)()),
            "control_models": list(getattr(self.engine, "control_models", list)()),
            "refiner": list(getattr(self.engine, "refiners", list)()),
            "upscalers": upscaler_infos(self.engine),
            "safety_checker": bool(getattr(self.engine, "safety_checker", False)),
            "workers": [w.info() for w in self.workers],  # one job at a time each (docs/scaling.md)
        }

    # -- connections ----------------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        conn = Connection(ws, f"c{next(self._ids)}")
        sender = asyncio.create_task(conn.sender())
        assembler = Assembler()
        log.info("%s connected from %s", conn.id, ws.remote_address)
        try:
            async for frame in ws:
                try:
                    message = assembler.feed(frame)
                    if message is not None:
                        self._dispatch(conn, message)
                except ProtocolError as exc:
                    conn.post(exc.to_message(job=job_of_frame(frame)))
        except ConnectionClosed:
            pass
        finally:
            conn.closed = True
            self._preprocessing.pop(conn, None)
            self._disconnected(conn)
            conn.outbox.put_nowait(None)
            await asyncio.gather(sender, return_exceptions=True)
            log.info("%s disconnected", conn.id)

    def _dispatch(self, conn: Connection, message: Message) -> None:
        kind = message.type
        if kind == ClientMessage.HELLO:
            check_version(message.data)
            fmt = message.data.get("image_format", "png")
            if fmt not in ("png", "rgba", "webp"):
                raise ProtocolError(f"'image_format' {fmt!r} is not supported; use png, rgba or webp",
                                    field="image_format")
            conn.image_format, conn.greeted = fmt, True
            conn.post(self.welcome())
        elif not conn.greeted:
            raise ProtocolError("send 'hello' with the protocol version first", field="type",
                                code=ErrorCode.HELLO_REQUIRED)
        elif kind == ClientMessage.GENERATE:
            self._submit(conn, message)
        elif kind == ClientMessage.CANCEL:
            self._cancel(conn, message.data.get("job"))
        elif kind == ClientMessage.MODELS:
            conn.post({"type": ServerMessage.MODELS, "models": [m.to_dict() for m in self.engine.models()]})
        elif kind in (ClientMessage.FETCH, ClientMessage.ACK, ClientMessage.HISTORY):
            self._answer(answer_stored(self, conn, kind, message.data))
        elif kind == ClientMessage.PREPROCESS:
            self._preprocess(conn, message)
        else:
            raise ProtocolError(f"unknown message type {kind!r}; use hello, generate, cancel, models, fetch, "
                                "ack, history or preprocess", field="type", code=ErrorCode.UNKNOWN_TYPE)

    def _answer(self, work: Coroutine[Any, Any, None]) -> asyncio.Task:
        """Run one answer beside the connection's reading, tracked until done (``close`` awaits it)."""
        task = asyncio.get_running_loop().create_task(work)
        self._answers.add(task)
        task.add_done_callback(self._answers.discard)
        return task

    def _preprocess(self, conn: Connection, message: Message) -> None:
        """A ``preprocess``, unless the connection already waits for ``MAX_PREPROCESS`` of them (QUEUE_FULL)."""
        waiting = self._preprocessing.setdefault(conn, set())
        if len(waiting) >= MAX_PREPROCESS:
            job = message.data.get("job")
            conn.post(error_message(ErrorCode.QUEUE_FULL, f"at most {MAX_PREPROCESS} 'preprocess' jobs per "
                                    "connection at once; wait for an answer ('control_image' or 'error') first",
                                    "job", job if isinstance(job, str) else None))
            return
        task = self._answer(answer_preprocess(self, conn, message))
        waiting.add(task)
        task.add_done_callback(waiting.discard)

    def _submit(self, conn: Connection, message: Message) -> None:
        job_id = message.data.get("job") if isinstance(message.data.get("job"), str) else None
        try:
            request = GenerateRequest.from_message(message.data)
            self.limits.check_request(request)
            check_attachments(request, message.images, self.limits)
            self._resolve_model(request)
        except ProtocolError as exc:
            conn.post(exc.to_message(job=job_id))
            return
        if request.job in self.owners:
            conn.post(error_message(ErrorCode.BAD_REQUEST, f"job id {request.job!r} is already in use; choose a new id",
                                    "job", request.job))
            return
        busy = request.replace and self._replace_stale(conn)
        job = Job(request.job, conn.id, request, message.images, from_idle=request.replace and not busy)
        try:
            position = self.queue.add(job)
        except QueueFull as exc:
            conn.post(error_message(ErrorCode.QUEUE_FULL, str(exc), "job", request.job))
            return
        self.owners[job.id] = conn
        conn.post({"type": ServerMessage.QUEUED, "job": job.id, "position": position})  # 1 = next: the running job not counted
        self._wakeup.set()

    def _resolve_model(self, request: GenerateRequest) -> None:
        try:
            self.engine.model_info(request.model)
        except EngineError as exc:
            raise ProtocolError(str(exc), field=exc.field or "model", code=exc.code) from None
        if request.scheduler is not None and request.scheduler not in self.engine.schedulers():
            raise ProtocolError(f"unknown scheduler {request.scheduler!r}; choose one of "
                                f"{', '.join(self.engine.schedulers())}", field="scheduler")
        check_names(request, self.engine)

    def _replace_stale(self, conn: Connection) -> bool:
        """A newer live request: drop this client's queued live jobs; stop its running one only
        if ``LivePacing`` allows (else it finishes and is delivered: progress first).
        Returns whether the client had live work queued or running."""
        stale = self.queue.remove_where(conn.id, lambda j: j.request.replace)
        for old in stale:
            self.owners.pop(old.id, None)
            conn.post({"type": ServerMessage.CANCELLED, "job": old.id, "reason": "replaced"})
        mine = [j for j in self.running_jobs() if j.client == conn.id and j.request.replace and not j.cancelled()]
        if not mine:
            return bool(stale)
        for running in mine:
            if self.live.may_stop(running, time.monotonic()):
                running.replaced = True
                running.cancel_event.set()  # stops at its next step; a finished one is not delivered
        return True

    def _cancel(self, conn: Connection, job_id: Any) -> None:
        if not isinstance(job_id, str) or self.owners.get(job_id) is not conn:
            raise ProtocolError(f"no queued or running job {job_id!r} of yours to cancel", field="job")
        if self.queue.remove(job_id) is not None:
            del self.owners[job_id]
            conn.post({"type": ServerMessage.CANCELLED, "job": job_id})
        elif (running := self.running_job(job_id)) is not None:
            running.cancel_event.set()  # the worker reports ``cancelled`` within one step

    def _disconnected(self, conn: Connection) -> None:
        """Abandoned jobs (docs/protocol.md): ``conn``'s queued jobs are dropped; of the running jobs it
        watches, those whose result is kept finish for ``fetch``, the others stop at their next step."""
        self.live.forget(conn.id)
        for job in self.queue.drop_client(conn.id):
            self.owners.pop(job.id, None)
            log.info("dropped queued job %s of %s", job.id, conn.id)
        for job in self.running_jobs():
            if self.owners.get(job.id) is not conn:
                continue
            if not keeps_result(self.store, job.id, job.request.replace):
                job.cancel_event.set()
                log.info("stopped running job %s: %s left and nobody can fetch its result", job.id, conn.id)
            else:
                asyncio.get_running_loop().call_later(self.orphan_grace, self._yield_orphan, job, conn)

    def _yield_orphan(self, job: Job, conn: Connection) -> None:
        """A kept job whose client left ``orphan_grace`` ago and did not come back for it (``fetch``) stops
        once other work waits for its worker; while none waits, it goes on (checked every second)."""
        if self.running_job(job.id) is not job or self.owners.get(job.id) is not conn or job.cancelled():
            return  # finished, taken over by a reconnected client, or cancelled already
        if len(self.queue):
            job.cancel_event.set()
            log.info("stopped running job %s: %s left %.0f s ago and other jobs wait", job.id, conn.id,
                     self.orphan_grace)
        else:
            asyncio.get_running_loop().call_later(1.0, self._yield_orphan, job, conn)

    # -- workers --------------------------------------------------------------------------------
    async def _work_loop(self) -> None:
        """Hand the next job of the fair queue to an idle worker, preferably one with its model loaded."""
        while True:
            idle = [w for w in self.workers if w.running is None]
            if not idle or not len(self.queue):
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            job = self.queue.pop_next()
            assert job is not None
            try:
                model_id = self.engine.model_info(job.request.model).id
            except EngineError:
                model_id = ""
            worker = pick_worker(idle, model_id)
            worker.running, job.started = job, time.monotonic()
            task = asyncio.create_task(self._run_on(worker, job))
            self._runs.add(task)
            task.add_done_callback(self._runs.discard)

    async def _run_on(self, worker: Worker, job: Job) -> None:
        loop = asyncio.get_running_loop()
        conn = self.owners[job.id]
        layers = None

        def image_format() -> str:
            return self.owners.get(job.id, conn).image_format

        def wants_preview() -> bool:
            return self.owners.get(job.id, conn).outbox.qsize() < PREVIEW_BACKLOG

        def post(message: dict[str, Any], attachments: Any) -> None:
            loop.call_soon_threadsafe(self._post_to_owner, job.id, message, attachments)

        try:
            reply, layers = await loop.run_in_executor(
                worker.executor, execute, worker, job, self.limits, self.store, image_format, wants_preview, post)
        except Exception:  # never let one job stop the worker
            log.error("job %s crashed:\n%s", job.id, traceback.format_exc())
            reply = (error_message(ErrorCode.INTERNAL, "the server failed while running this job; see its log",
                                   None, job.id), None)
        finally:
            worker.running = None
            self._wakeup.set()
            release_freed_memory()
        if job.request.replace and reply[0].get("type") == "result":
            self.live.delivered(job.client, time.monotonic() - job.started)
        if layers is None:
            self._deliver(job, conn, reply)
        else:
            self.finishing.add(job.id)
            task = asyncio.create_task(self._save_then_deliver(job, conn, reply, layers))
            self._finishers.add(task)
            task.add_done_callback(self._finishers.discard)

    async def _save_then_deliver(self, job: Job, conn: Connection, reply: tuple, layers: list) -> None:
        """Nothing lost: the result is on disk before ``result`` is sent."""
        try:
            await asyncio.get_running_loop().run_in_executor(self._saver, self.store.save, job.id, reply[0], layers)
        except Exception:  # a full disk must not lose the result the client is waiting for
            log.error("could not save the result of %s:\n%s", job.id, traceback.format_exc())
        finally:
            self.finishing.discard(job.id)
        self._deliver(job, conn, reply)

    def _deliver(self, job: Job, conn: Connection, reply: tuple) -> None:
        conn = self.owners.pop(job.id, conn)  # a reconnected client may have taken it over
        if conn.closed:
            log.info("%s finished after %s left; its result is kept for fetch", job.id, conn.id)
        conn.post(*reply)

    def _post_to_owner(self, job: str, message: dict[str, Any], attachments: dict[str, Image] | None) -> None:
        conn = self.owners.get(job)
        if conn is not None:
            conn.post(message, attachments)
