"""Easel protocol v1's framing, sans-IO: images as binary frames, messages as a JSON text frame followed by
their attachments, and the ``Assembler`` that puts received frames back together. docs/protocol.md
describes every byte; ``easel.client.protocol`` re-exports all of it beside the message declarations.
Stdlib only (the plugins bundle ``easel.client`` whole).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

from .codes import ProtocolError

PROTOCOL_VERSION = 1

#: Frame-size limit both sides set explicitly (websockets' default is only 1 MiB).
DEFAULT_MAX_MESSAGE_BYTES = 256 * 2**20 + 2**16  # an 8192x8192 RGBA image plus header

# ----------------------------------------------------------------------------- images

IMAGE_MAGIC = b"EZIM"
IMAGE_HEADER = struct.Struct(">4sBBHII")  # magic, version, format, reserved, width, height
FORMAT_PNG = 1  # payload is a PNG file; width/height repeat the PNG's size
FORMAT_RGBA8 = 2  # payload is width*height*4 bytes, row-major, non-premultiplied RGBA
FORMAT_GRAY8 = 3  # payload is width*height bytes (masks: 0 keep .. 255 regenerate)
FORMAT_WEBP = 4  # payload is a lossless WebP file
FORMAT_NAMES = {FORMAT_PNG: "png", FORMAT_RGBA8: "rgba", FORMAT_GRAY8: "gray", FORMAT_WEBP: "webp"}
FORMAT_CODES = {name: code for code, name in FORMAT_NAMES.items()}
_CHANNELS = {FORMAT_RGBA8: 4, FORMAT_GRAY8: 1}


@dataclass(frozen=True)
class Image:
    """An image as it travels: encoded bytes plus size. Decoding pixels is the receiver's job."""

    width: int
    height: int
    format: str  # "png" | "rgba" | "gray" | "webp"
    data: bytes

    @classmethod
    def rgba(cls, width: int, height: int, data: bytes) -> Image:
        return cls(width, height, "rgba", bytes(data))

    @classmethod
    def gray(cls, width: int, height: int, data: bytes) -> Image:
        return cls(width, height, "gray", bytes(data))

    @classmethod
    def png(cls, data: bytes) -> Image:
        width, height = png_size(data)
        return cls(width, height, "png", bytes(data))


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, without decoding it."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ProtocolError("image bytes are not a PNG file", field="image")
    return struct.unpack(">II", data[16:24])


def encode_image(image: Image) -> bytes:
    """One binary frame: a 16-byte header, then the payload."""
    code = FORMAT_CODES.get(image.format)
    if code is None:
        raise ProtocolError(f"unknown image format {image.format!r}", field="format")
    header = IMAGE_HEADER.pack(IMAGE_MAGIC, 1, code, 0, image.width, image.height)
    return header + image.data


def decode_image(frame: bytes, name: str = "image") -> Image:
    """Parse a binary frame made by ``encode_image``; checks sizes, not pixel contents."""
    if len(frame) < IMAGE_HEADER.size:
        raise ProtocolError(f"{name}: binary frame shorter than the 16-byte image header", field=name)
    magic, version, code, _, width, height = IMAGE_HEADER.unpack_from(frame)
    if magic != IMAGE_MAGIC or version != 1:
        raise ProtocolError(f"{name}: binary frame does not start with the EZIM v1 image header", field=name)
    if code not in FORMAT_NAMES:
        raise ProtocolError(f"{name}: unknown image format code {code} (use 1=png, 2=rgba, 3=gray, 4=webp)", field=name)
    if width < 1 or height < 1:
        raise ProtocolError(f"{name}: image size {width}x{height} must be positive", field=name)
    payload = frame[IMAGE_HEADER.size :]
    channels = _CHANNELS.get(code)
    if channels is not None and len(payload) != width * height * channels:
        raise ProtocolError(
            f"{name}: raw {FORMAT_NAMES[code]} payload has {len(payload)} bytes, expected "
            f"{width}x{height}x{channels} = {width * height * channels}",
            field=name,
        )
    return Image(width, height, FORMAT_NAMES[code], bytes(payload))


# ----------------------------------------------------------------------------- messages


def encode_message(message: dict[str, Any], attachments: dict[str, Image] | None = None) -> list[str | bytes]:
    """Frames for one message: a JSON text frame, then one binary frame per attachment."""
    message = dict(message)
    attachments = attachments or {}
    if attachments:
        message["attachments"] = list(attachments)
    else:
        message.pop("attachments", None)
    frames: list[str | bytes] = [json.dumps(message, separators=(",", ":"))]
    frames.extend(encode_image(img) for img in attachments.values())
    return frames


@dataclass
class Message:
    """A received message: its JSON fields and its decoded attachments by name."""

    data: dict[str, Any]
    images: dict[str, Image] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return self.data.get("type", "")

    @property
    def job(self) -> str | None:
        return self.data.get("job")


def job_of_frame(frame: str | bytes) -> str | None:
    """Best-effort job id of a text frame that was refused, so that the error can name the client's job."""
    if not isinstance(frame, str) or '"job"' not in frame:
        return None
    try:
        data = json.loads(frame)
    except ValueError:
        return None
    return data.get("job") if isinstance(data, dict) and isinstance(data.get("job"), str) else None


class Assembler:
    """Turns a stream of frames into messages (sans-IO: feed frames, get messages).

    After a ``ProtocolError`` the assembler is reset and ready for the next message, so a
    peer can keep the connection open and report the error.
    """

    def __init__(self, max_attachments: int = 24):
        self.max_attachments = max_attachments
        self._pending: Message | None = None
        self._names: list[str] = []

    @property
    def waiting_for_images(self) -> bool:
        return self._pending is not None

    def feed(self, frame: str | bytes) -> Message | None:
        """Feed one frame; returns a complete message or None while attachments are due."""
        if isinstance(frame, str):
            if self._pending is not None:
                names, self._pending, self._names = self._names, None, []
                raise ProtocolError(
                    f"expected {len(names)} more binary image frame(s) ({', '.join(names)}) "
                    "before the next text message",
                    field="attachments",
                )
            return self._start(frame)
        if self._pending is None:
            raise ProtocolError("binary frame without a message announcing it in 'attachments'", field="attachments")
        name = self._names.pop(0)
        try:
            self._pending.images[name] = decode_image(frame, name)
        except ProtocolError:
            self._pending, self._names = None, []
            raise
        if not self._names:
            done, self._pending = self._pending, None
            return done
        return None

    def _start(self, text: str) -> Message | None:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ProtocolError(f"text frame is not valid JSON: {exc}", field="json") from None
        if not isinstance(data, dict):
            raise ProtocolError("a message must be a JSON object", field="json")
        if not isinstance(data.get("type"), str):
            raise ProtocolError("message has no 'type' string (e.g. \"hello\", \"generate\")", field="type")
        names = data.get("attachments", [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ProtocolError("'attachments' must be a list of names", field="attachments")
        if len(names) > self.max_attachments or len(set(names)) != len(names):
            raise ProtocolError(
                f"'attachments' must list at most {self.max_attachments} distinct names", field="attachments"
            )
        message = Message(data)
        if not names:
            return message
        self._pending, self._names = message, list(names)
        return None
