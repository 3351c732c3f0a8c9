"""One client connection on the server: an outbox drained by a single sender task."""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from ..client.protocol import Image, encode_message

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
