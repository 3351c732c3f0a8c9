"""Transfer: a 2048x2048 RGBA region sent and a result received over a real loopback websocket.

Each format is timed end to end: encode on the client, frames through websockets (no
compression), decode on the server, encode the reply, decode on the client.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
from websockets.asyncio.server import serve
from websockets.sync.client import connect

from server.codec import decode_rgba, encode
from server.protocol import DEFAULT_MAX_MESSAGE_BYTES, Assembler, decode_image, encode_image, encode_message

from .common import Row, median_time

FORMATS = ("rgba", "png", "webp")


def canvas(size: int) -> np.ndarray:
    """A painting-like test image: smooth gradients, shapes and a little noise."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    rgb = np.stack([x, y, 0.5 + 0.5 * np.sin(6 * x + 3 * y)], -1) * 255
    rgb[(x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.05] = (200, 40, 40)
    rgb += np.random.default_rng(0).normal(0, 4, rgb.shape)
    out = np.empty((size, size, 4), np.uint8)
    out[..., :3] = np.clip(rgb, 0, 255)
    out[..., 3] = 255
    return out


class EchoServer:
    """Decodes an image message and answers with the image re-encoded in the same format."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()

        async def handler(ws):
            asm = Assembler()
            async for frame in ws:
                msg = asm.feed(frame)
                if msg is None:
                    continue
                img = msg.images["image"]
                pixels = decode_rgba(img)
                for out in encode_message({"type": "result"}, {"image0": encode(pixels, img.format)}):
                    await ws.send(out)

        async def main():
            server = await serve(handler, "127.0.0.1", 0, max_size=DEFAULT_MAX_MESSAGE_BYTES, compression=None)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            await asyncio.Future()

        threading.Thread(target=self.loop.run_until_complete, args=(main(),), daemon=True).start()
        ready.wait(10)


def round_trip(ws, pixels: np.ndarray, fmt: str) -> np.ndarray:
    for frame in encode_message({"type": "generate"}, {"image": encode(pixels, fmt)}):
        ws.send(frame)
    ws.recv()
    return decode_rgba(decode_image(ws.recv()))


def run(quick: bool = False) -> list[Row]:
    size = 1024 if quick else 2048
    pixels = canvas(size)
    server = EchoServer()
    rows = []
    with connect(f"ws://127.0.0.1:{server.port}", max_size=DEFAULT_MAX_MESSAGE_BYTES, compression=None) as ws:
        for fmt in FORMATS:
            back = round_trip(ws, pixels, fmt)
            assert np.array_equal(back, pixels), f"{fmt} is not lossless"
            t = median_time(lambda fmt=fmt: round_trip(ws, pixels, fmt), repeats=3 if quick else 5)
            nbytes = len(encode_image(encode(pixels, fmt)))
            rows.append(Row("transfer", f"{size}² RGBA round trip, {fmt}", t * 1000, "ms",
                            note=f"{nbytes / 2**20:.1f} MiB per direction"))
    return rows
