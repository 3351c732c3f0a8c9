"""``fetch`` / ``ack`` / ``history``: finished results from the result store (disk work off the loop)."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from ..client.codes import ClientMessage, ErrorCode, ServerMessage
from ..client.protocol import error_message
from .codec import encode
from .connections import Connection
from .results import ResultStore


class Jobs(Protocol):
    """What answering needs of the app: its result store and its running and queued jobs."""

    store: ResultStore | None

    def take_over(self, job_id: str, conn: Connection) -> bool: ...

    def is_queued(self, job_id: str) -> bool: ...


async def answer_stored(app: Jobs, conn: Connection, kind: str, data: dict[str, Any]) -> None:
    """Answer one ``fetch``, ``ack`` or ``history`` of ``conn`` against ``app.store``."""
    loop = asyncio.get_running_loop()
    job = data.get("job")
    if app.store is None:
        conn.post(error_message(ErrorCode.UNAVAILABLE, "this server keeps no results (started without a store)",
                                None, job if isinstance(job, str) else None))
        return
    if kind == ClientMessage.HISTORY:
        limit = data.get("limit", 50)
        limit = limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else 50
        conn.post({"type": ServerMessage.HISTORY, "jobs": app.store.history(limit)})
        return
    if not isinstance(job, str):
        conn.post(error_message(ErrorCode.BAD_REQUEST, f"'{kind}' needs the 'job' id of a finished job", "job"))
        return
    if kind == ClientMessage.ACK:
        found = await loop.run_in_executor(None, app.store.ack, job)
        conn.post({"type": ServerMessage.ACKED, "job": job, "found": found})
        return
    if app.take_over(job, conn):  # a reconnected client takes over delivery of its running job
        conn.post({"type": ServerMessage.STATUS, "job": job, "state": "running"})
        return
    stored = await loop.run_in_executor(None, app.store.get, job)
    if stored is None:
        state = "queued" if app.is_queued(job) else "unknown"
        conn.post(error_message(ErrorCode.NOT_FOUND, f"no finished result for job {job!r} ({state}); results are "
                                "kept until acknowledged or past the retention limit", "job", job))
        return
    meta, layers = stored
    attachments = await loop.run_in_executor(
        None, lambda: {f"image{i}": encode(rgba, conn.image_format) for i, rgba in enumerate(layers)})
    conn.post(meta, attachments)
