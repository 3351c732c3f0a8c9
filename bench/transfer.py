"""Transfer: a 2048x2048 RGBA region sent and a result received over a real loopback websocket.

Each format is timed end to end: encode on the client, frames through websockets (no
compression), decode on the server, encode the reply, decode on the client. The target compares
that round trip with the job it carries: a 4-step img2img of the same canvas through the server
on the tiny SD (native 512, so the work runs at 512² and is scaled back to the canvas size),
counting the server's own work only (prepare + engine + composite, from the result's timings).
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
from websockets.asyncio.server import serve
from websockets.sync.client import connect

from easel.client.protocol import DEFAULT_MAX_MESSAGE_BYTES, Assembler, decode_image, encode_image, encode_message
from easel.server.codec import decode_rgba, encode

from . import fixtures
from .common import Row, check, med, median_time

FORMATS = ("rgba", "png", "webp")
canvas = fixtures.canvas


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


def job_seconds(pixels: np.ndarray, repeats: int) -> float:
    """Median server-side work (prepare + engine + composite) of a 4-step img2img of ``pixels``."""
    from easel.client.connection import Client, new_job_id
    from easel.client.protocol import GenerateRequest, Image

    engine = fixtures.engine_for(fixtures.tiny_sd(512))
    image = Image.rgba(pixels.shape[1], pixels.shape[0], pixels.tobytes())
    work = []
    with fixtures.serve(engine) as (url, _), Client(url, image_format="rgba", client_name="bench") as client:
        for _ in range(repeats + 1):
            request = GenerateRequest(job=new_job_id(), prompt=fixtures.PROMPT, steps=4, seed=1, strength=0.6)
            t = client.generate(request, image).timings
            work.append(t["prepare_s"] + t["run_s"] + t["compose_s"])
    engine.close()
    return med(work[1:])


def run(quick: bool = False) -> list[Row]:
    size = 1024 if quick else 2048
    pixels = canvas(size)
    server = EchoServer()
    repeats = 3 if quick else 5
    trips = {}
    with connect(f"ws://127.0.0.1:{server.port}", max_size=DEFAULT_MAX_MESSAGE_BYTES, compression=None) as ws:
        for fmt in FORMATS:
            back = round_trip(ws, pixels, fmt)
            assert np.array_equal(back, pixels), f"{fmt} is not lossless"
            slow = fmt != "rgba" and not quick  # seconds per round trip at 2048²: fewer repeats
            trips[fmt] = median_time(lambda fmt=fmt: round_trip(ws, pixels, fmt), repeats=3 if slow else repeats,
                                     warmup=0 if slow else 1)
    job = job_seconds(pixels, repeats)
    rows = []
    for fmt in FORMATS:
        nbytes = len(encode_image(encode(pixels, fmt)))
        rows.append(Row("transfer", f"{size}² RGBA round trip, {fmt}", trips[fmt] * 1000, "ms",
                        note=f"{nbytes / 2**20:.1f} MiB per direction"))
    for fmt in FORMATS:
        rows.append(check("transfer", f"{size}² {fmt} round trip / 4-step tiny-model job", 100 * trips[fmt] / job, "%",
                          "<= 10%", f"job {job:.3f} s: img2img of the {size}² canvas, server-side work"))
    return rows
