"""The websocket app: connections, message dispatch, one worker per device.

Thin I/O around the sans-IO pieces: ``protocol.Assembler`` parses frames, ``jobs.JobQueue``
orders work, ``generation`` runs it on a worker thread. Every bad request gets an ``error``
naming the field; the connection and the server keep working.
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import logging
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from .. import __version__
from ..client.protocol import (
    FORMAT_CODES,
    PROTOCOL_VERSION,
    Assembler,
    GenerateRequest,
    Image,
    Message,
    ProtocolError,
    check_version,
    encode_message,
    error_message,
)
from .codec import encode
from .engine.types import EngineError, JobCancelled, ModelInfo, Progress
from .features import check_names
from .generation import check_attachments, decode_inputs, run_generation
from .jobs import LIVE_RESTART, Job, JobQueue, LivePacing, QueueFull
from .limits import Limits
from .results import ResultStore
from .security import Security

log = logging.getLogger(__name__)
PREVIEW_BACKLOG = 4  # previews are skipped while this many messages wait to be sent


class Connection:
    """One client: an outbox drained by a single sender task, so frames never interleave."""

    def __init__(self, ws: ServerConnection, cid: str):
        self.ws, self.id = ws, cid
        self.greeted = False
        self.image_format = "png"
        self.closed = False
        self.outbox: asyncio.Queue[tuple[dict[str, Any], dict[str, Image] | None] | None] = asyncio.Queue()

    def post(self, message: dict[str, Any], attachments: dict[str, Image] | None = None) -> None:
        if not self.closed:
            self.outbox.put_nowait((message, attachments))

    async def sender(self) -> None:
        while (item := await self.outbox.get()) is not None:
            try:
                for frame in encode_message(*item):
                    await self.ws.send(frame)
            except ConnectionClosed:
                self.closed = True
                return


class App:
    """Easel's websocket server around an engine."""

    def __init__(self, engine: Any, limits: Limits | None = None, store: ResultStore | None = None,
                 security: Security | None = None, live_restart: float = LIVE_RESTART):
        self.engine = engine
        self.limits = limits or Limits()
        self.store = store
        self.security = security or Security()
        self.queue = JobQueue(self.limits.max_jobs_per_client)
        self.running: Job | None = None
        self.live = LivePacing(live_restart)  # when a newer live state may stop the running frame
        self.owners: dict[str, Connection] = {}  # job id -> connection, for queued and running jobs
        self._ids = itertools.count(1)
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="easel-worker")
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
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        if self.running is not None:
            self.running.cancel_event.set()
        if self._worker is not None:
            self._worker.cancel()
        if self._finishers:
            await asyncio.gather(*self._finishers, return_exceptions=True)
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._saver.shutdown(wait=True)

    def welcome(self) -> dict[str, Any]:
        models: list[ModelInfo] = self.engine.models()
        return {
            "type": "welcome", "protocol": PROTOCOL_VERSION, "server": __version__,
            "device": self.engine.device, "dtype": self.engine.dtype,
            "models": [m.to_dict() for m in models], "default_model": models[0].id if models else None,
            "schedulers": list(self.engine.schedulers()), "limits": self.limits.to_dict(),
            "image_formats": sorted(FORMAT_CODES.keys() - {"gray"}),
            # power features (docs/features.md): what jobs may name in loras / control_model / refiner
            "loras": list(getattr(self.engine, "loras", list)()),
            "control_models": list(getattr(self.engine, "control_models", list)()),
            "refiner": list(getattr(self.engine, "refiners", list)()),
            "safety_checker": bool(getattr(self.engine, "safety_checker", False)),
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
                    conn.post(exc.to_message(job=_job_of(frame)))
        except ConnectionClosed:
            pass
        finally:
            conn.closed = True
            self._disconnected(conn)
            conn.outbox.put_nowait(None)
            await asyncio.gather(sender, return_exceptions=True)
            log.info("%s disconnected", conn.id)

    def _dispatch(self, conn: Connection, message: Message) -> None:
        kind = message.type
        if kind == "hello":
            check_version(message.data)
            fmt = message.data.get("image_format", "png")
            if fmt not in ("png", "rgba", "webp"):
                raise ProtocolError(f"'image_format' {fmt!r} is not supported; use png, rgba or webp",
                                    field="image_format")
            conn.image_format, conn.greeted = fmt, True
            conn.post(self.welcome())
        elif not conn.greeted:
            raise ProtocolError("send 'hello' with the protocol version first", field="type",
                                code="hello_required")
        elif kind == "generate":
            self._submit(conn, message)
        elif kind == "cancel":
            self._cancel(conn, message.data.get("job"))
        elif kind == "models":
            conn.post({"type": "models", "models": [m.to_dict() for m in self.engine.models()]})
        elif kind in ("fetch", "ack", "history"):
            asyncio.get_running_loop().create_task(self._stored(conn, kind, message.data))
        else:
            raise ProtocolError(f"unknown message type {kind!r}; use hello, generate, cancel, models, fetch, "
                                "ack or history", field="type", code="unknown_type")

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
            conn.post(error_message("bad_request", f"job id {request.job!r} is already in use; choose a new id",
                                    "job", request.job))
            return
        busy = request.replace and self._replace_stale(conn)
        job = Job(request.job, conn.id, request, message.images, from_idle=request.replace and not busy)
        try:
            position = self.queue.add(job)
        except QueueFull as exc:
            conn.post(error_message("queue_full", str(exc), "job", request.job))
            return
        self.owners[job.id] = conn
        conn.post({"type": "queued", "job": job.id, "position": position})  # 1 = next: the running job not counted
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
        if ``LivePacing`` allows (else it finishes and is delivered: progress first, issue #21).
        Returns whether the client had live work queued or running."""
        stale = self.queue.remove_where(conn.id, lambda j: j.request.replace)
        for old in stale:
            self.owners.pop(old.id, None)
            conn.post({"type": "cancelled", "job": old.id, "reason": "replaced"})
        running = self.running
        if running is None or running.client != conn.id or not running.request.replace or running.cancelled():
            return bool(stale)
        if self.live.may_stop(running, time.monotonic()):
            running.replaced = True
            running.cancel_event.set()  # stops at its next step; a finished one is not delivered
        return True

    def _cancel(self, conn: Connection, job_id: Any) -> None:
        if not isinstance(job_id, str) or self.owners.get(job_id) is not conn:
            raise ProtocolError(f"no queued or running job {job_id!r} of yours to cancel", field="job")
        if self.queue.remove(job_id) is not None:
            del self.owners[job_id]
            conn.post({"type": "cancelled", "job": job_id})
        elif self.running is not None and self.running.id == job_id:
            self.running.cancel_event.set()  # the worker reports ``cancelled`` within one step

    def _disconnected(self, conn: Connection) -> None:
        self.live.forget(conn.id)
        for job in self.queue.drop_client(conn.id):
            self.owners.pop(job.id, None)
            log.info("dropped queued job %s of %s", job.id, conn.id)

    # -- worker ---------------------------------------------------------------------------------
    async def _work_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            job = self.queue.pop_next()
            if job is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            conn = self.owners[job.id]
            self.running, job.state, job.started = job, "running", time.monotonic()
            layers = None
            try:
                reply, layers = await loop.run_in_executor(self._executor, self._execute, job, conn, loop)
            except Exception:  # noqa: BLE001 - never let one job stop the worker
                log.error("job %s crashed:\n%s", job.id, traceback.format_exc())
                reply = (error_message("internal", "the server failed while running this job; see its log",
                                       None, job.id), None)
            finally:
                self.running = None
                _release_freed_memory()
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
        except Exception:  # noqa: BLE001 - a full disk must not lose the result the client is waiting for
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

    async def _stored(self, conn: Connection, kind: str, data: dict[str, Any]) -> None:
        """``fetch`` / ``ack`` / ``history`` against the result store (disk work off the loop)."""
        loop = asyncio.get_running_loop()
        job = data.get("job")
        if self.store is None:
            conn.post(error_message("unavailable", "this server keeps no results (started without a store)",
                                    None, job if isinstance(job, str) else None))
            return
        if kind == "history":
            limit = data.get("limit", 50)
            limit = limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else 50
            conn.post({"type": "history", "jobs": self.store.history(limit)})
            return
        if not isinstance(job, str):
            conn.post(error_message("bad_request", f"'{kind}' needs the 'job' id of a finished job", "job"))
            return
        if kind == "ack":
            found = await loop.run_in_executor(None, self.store.ack, job)
            conn.post({"type": "acked", "job": job, "found": found})
            return
        if (self.running is not None and self.running.id == job) or job in self.finishing:
            self.owners[job] = conn  # a reconnected client takes over delivery of its running job
            conn.post({"type": "status", "job": job, "state": "running"})
            return
        stored = await loop.run_in_executor(None, self.store.get, job)
        if stored is None:
            state = "queued" if job in self.queue else "unknown"
            conn.post(error_message("not_found", f"no finished result for job {job!r} ({state}); results are "
                                    "kept until acknowledged or past the retention limit", "job", job))
            return
        meta, layers = stored
        attachments = await loop.run_in_executor(
            None, lambda: {f"image{i}": encode(rgba, conn.image_format) for i, rgba in enumerate(layers)})
        conn.post(meta, attachments)

    def _execute(self, job: Job, conn: Connection, loop: asyncio.AbstractEventLoop):
        """Runs on the worker thread: the whole generation, including encoding the results."""
        request = job.request

        def progress(p: Progress) -> None:
            message = {"type": "progress", "job": job.id, "stage": p.stage, "step": p.step,
                       "total": p.total, "message": p.message}
            attachments = None
            owner = self.owners.get(job.id, conn)
            if p.preview is not None and owner.outbox.qsize() < PREVIEW_BACKLOG:
                attachments = {"preview": encode(np.asarray(p.preview.convert("RGB")), owner.image_format)}
            loop.call_soon_threadsafe(self._post_to_owner, job.id, message, attachments)

        t0 = time.perf_counter()
        try:
            inputs = decode_inputs(request, job.images, self.limits)
            model = self.engine.model_info(request.model)
            output = run_generation(self.engine, request, inputs, model, progress, job.cancelled)
        except JobCancelled:
            return (_cancelled_message(job), None), None
        except (EngineError, ProtocolError) as exc:
            return (error_message(exc.code, str(exc), exc.field, job.id), None), None
        if job.cancelled():  # cancelled after its last step: stale, never delivered
            return (_cancelled_message(job), None), None
        t1 = time.perf_counter()
        attachments = {f"image{i}": encode(layer.rgba, conn.image_format) for i, layer in enumerate(output.layers)}
        timings = {"queued_s": (job.started or t0) - job.submitted, **output.timings,
                   "encode_s": time.perf_counter() - t1, "total_s": time.perf_counter() - t0}
        images = [{"seed": layer.seed, "x": layer.x, "y": layer.y, "width": layer.rgba.shape[1],
                   "height": layer.rgba.shape[0]} for layer in output.layers]
        meta = {"type": "result", "job": job.id, "images": images, "parameters": output.parameters,
                "timings": {k: round(v, 4) for k, v in timings.items()}}
        if self.store is not None and self.store.valid_id(job.id) and not request.replace:
            return (meta, attachments), [layer.rgba for layer in output.layers]  # saved, then sent
        return (meta, attachments), None


def _release_freed_memory() -> None:
    """Give memory freed by the last job back to the OS (glibc keeps it otherwise: +9% RSS
    across mode switches, 0.7% with this; ~4 ms, docs/performance.md)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc


def _cancelled_message(job: Job) -> dict[str, Any]:
    return {"type": "cancelled", "job": job.id, **({"reason": "replaced"} if job.replaced else {})}


def _job_of(frame: str | bytes) -> str | None:
    """Best-effort job id of a rejected text frame, so clients can match the error."""
    if isinstance(frame, str) and '"job"' in frame:
        import json

        try:
            data = json.loads(frame)
            return data.get("job") if isinstance(data, dict) and isinstance(data.get("job"), str) else None
        except ValueError:
            return None
    return None
