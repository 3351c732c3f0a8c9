"""The ``preprocess`` message: a control-layer guide made from the attached picture (docs/protocol.md).

It does not wait in the generate queue: guides are quick, so they run on their own worker thread,
one at a time, beside the running generate job, and answer ``control_image`` (or ``error``).
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ...client.codes import ErrorCode, ServerMessage
from ...client.protocol import Image, Message, ProtocolError, error_message
from ..codec import decode_rgba, encode
from ..engine.types import EngineError
from . import check_kind, run

log = logging.getLogger(__name__)
_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="easel-preprocess")


def check(data: dict[str, Any], images: dict[str, Image], limits: Any) -> tuple[str, str, Image]:
    """The job id, kind and picture of a ``preprocess`` message; ProtocolError naming the field."""
    job = data.get("job")
    if not isinstance(job, str) or not job:
        raise ProtocolError("'job' must be a non-empty string (a new id for this request)", field="job")
    try:
        kind = check_kind(data.get("kind"))
    except EngineError as exc:
        raise ProtocolError(str(exc), field=exc.field, code=exc.code) from None
    image = images.get("image")
    if image is None:
        raise ProtocolError("'preprocess' needs the picture as attachment 'image'", field="image")
    extra = sorted(set(images) - {"image"})
    if extra:
        raise ProtocolError(f"unexpected attachment {extra[0]!r}; 'preprocess' takes only 'image'", field=extra[0])
    limits.check_size(image.width, image.height, "image")
    return job, kind, image


def flatten(rgba: np.ndarray) -> np.ndarray:
    """RGB of an RGBA picture over white (transparent canvas areas read as blank paper)."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    return np.rint(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)


async def answer(app: Any, conn: Any, message: Message) -> None:
    """Answer one ``preprocess``: ``progress`` messages, then ``control_image`` or ``error``."""
    loop = asyncio.get_running_loop()
    job = message.data.get("job") if isinstance(message.data.get("job"), str) else None
    try:
        job, kind, image = check(message.data, message.images, app.limits)
    except ProtocolError as exc:
        conn.post(exc.to_message(job=job))
        return
    library = getattr(app.engine, "library", None)
    roots = list(library.folders) if library is not None else []

    def report(text: str) -> None:
        stage = "load" if text.startswith("loading") else "preprocess"
        progress = {"type": ServerMessage.PROGRESS, "job": job, "stage": stage, "step": 0, "total": 1, "message": text}
        loop.call_soon_threadsafe(conn.post, progress)

    def work() -> Image:
        rgb = flatten(decode_rgba(image, "image"))
        return encode(run(kind, rgb, roots, report), conn.image_format)

    try:
        guide = await loop.run_in_executor(_worker, work)
    except (ProtocolError, EngineError) as exc:
        conn.post(error_message(exc.code, str(exc), exc.field, job))
        return
    except Exception:  # a bug: logged, the connection goes on
        log.error("preprocess %s (%s) crashed:\n%s", job, kind, traceback.format_exc())
        conn.post(error_message(ErrorCode.INTERNAL, "the server failed while making this guide; see its log", None, job))
        return
    conn.post({"type": ServerMessage.CONTROL_IMAGE, "job": job, "kind": kind, "width": guide.width, "height": guide.height},
              {"image": guide})
