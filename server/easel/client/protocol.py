"""Easel protocol v1: a sans-IO core shared by the server, the client and both plugins.

Stdlib only (the plugin installer bundles this file). It knows how to turn messages into
websocket frames and back, and how to validate a generation request; it does no I/O.

A message is one JSON text frame. A message may carry images: its ``attachments`` key
lists their names, and exactly that many binary frames follow it, in order, each one an
image frame (see ``encode_image``). docs/protocol.md describes every byte.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

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


class ProtocolError(ValueError):
    """A frame or message that does not follow the protocol. ``field`` names what is wrong."""

    def __init__(self, message: str, field: str | None = None, code: str = "bad_request"):
        super().__init__(message)
        self.field = field
        self.code = code

    def to_message(self, job: str | None = None) -> dict[str, Any]:
        return error_message(self.code, str(self), field=self.field, job=job)


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


class Assembler:
    """Turns a stream of frames into messages (sans-IO: feed frames, get messages).

    After a ``ProtocolError`` the assembler is reset and ready for the next message, so a
    peer can keep the connection open and report the error.
    """

    def __init__(self, max_attachments: int = 8):
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


def error_message(code: str, message: str, field: str | None = None, job: str | None = None) -> dict[str, Any]:
    return {"type": "error", "job": job, "code": code, "field": field, "message": message}


# ----------------------------------------------------------------------------- requests

SCHEDULERS = ("euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "ddim", "lcm")


@dataclass
class GenerateRequest:
    """Everything one generation needs. Images travel as attachments ``image`` and ``mask``.

    Mode follows from the attachments: none = text to image; ``image`` = image to image;
    ``image`` + ``mask`` = inpaint (mask 255 = regenerate, soft values blend).
    ``x``/``y`` place the sent image in the document; results come back with document offsets.
    """

    job: str
    prompt: str
    negative_prompt: str = ""
    model: str | None = None  # None: the server's default model
    steps: int | None = None  # None: the model's default
    guidance: float | None = None  # None: the model's default
    seed: int = -1  # -1: random; the seed used is always returned
    batch: int = 1
    width: int | None = None  # text to image size; None: the model's native size
    height: int | None = None
    scheduler: str | None = None  # None: the model's own scheduler
    strength: float = 1.0  # image to image / inpaint: 1.0 = from scratch
    x: int = 0  # document offset of the sent image
    y: int = 0
    canvas_width: int | None = None  # document size (context clamping); None: image size
    canvas_height: int | None = None
    grow: int | None = None  # selection work: None = server defaults (docs/imaging.md)
    feather: int | None = None
    padding: float | None = None
    preview: bool = True  # send cheap step previews with progress
    # power features (docs/features.md)
    loras: list | None = None  # [{"name": "ink.safetensors", "weight": 0.8}, ...] from welcome.loras
    control_model: str | None = None  # ControlNet id from welcome.control_models; attachment ``control``
    control_strength: float = 1.0
    variation_seed: int | None = None  # blend this seed's noise into ``seed``'s
    variation_strength: float = 0.0  # 0 = only ``seed``, 1 = only ``variation_seed``
    upscale: int | None = None  # 2 or 4: tiled upscale of ``image``, refined at ``strength``
    refiner: bool = False  # SDXL: hand the last steps to the configured refiner model
    refiner_switch: float = 0.8  # fraction of denoising done by the base model
    replace: bool = False  # live painting: replaces this client's queued job and stops its running one

    def to_message(self) -> dict[str, Any]:
        defaults = {f.name: f.default for f in fields(self)}
        data = {k: v for k, v in asdict(self).items()
                if v is not None and not (k in _FEATURES and v == defaults[k])}
        return {"type": "generate", **data}

    @classmethod
    def from_message(cls, data: dict[str, Any]) -> GenerateRequest:
        """Validate a ``generate`` message's fields; raises ProtocolError naming the field."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known) - {"type", "attachments"})
        if unknown:
            raise ProtocolError(f"unknown field {unknown[0]!r} in generate", field=unknown[0])
        for name in ("job", "prompt"):
            if name not in data:
                raise ProtocolError(f"'{name}' is missing: generate needs a job id and a prompt", field=name)
        values = {name: _check_field(name, data[name]) for name in known if name in data}
        request = cls(**values)
        request._check_ranges()
        return request

    def _check_ranges(self) -> None:
        if not self.job:
            _bad("job", "must be a non-empty string chosen by the client")
        if self.steps is not None and self.steps < 1:
            _bad("steps", f"must be at least 1 (got {self.steps})")
        if not 0.0 <= self.strength <= 1.0:
            _bad("strength", f"must be between 0 and 1 (got {self.strength}); use 1.0 to generate from scratch")
        if self.guidance is not None and not 0.0 <= self.guidance <= 100.0:
            _bad("guidance", f"must be between 0 and 100 (got {self.guidance})")
        if not 1 <= self.batch <= 64:
            _bad("batch", f"must be at least 1 (got {self.batch})")
        if self.seed < -1 or self.seed >= 2**63:
            _bad("seed", f"must be -1 (random) or between 0 and 2^63-1 (got {self.seed})")
        for name in ("width", "height", "canvas_width", "canvas_height"):
            value = getattr(self, name)
            if value is not None and value < 1:
                _bad(name, f"must be a positive number of pixels (got {value})")
        if self.scheduler is not None and self.scheduler not in SCHEDULERS:
            _bad("scheduler", f"unknown scheduler {self.scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
        for name in ("grow", "feather"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1024:
                _bad(name, f"must be between 0 and 1024 pixels (got {value})")
        if self.padding is not None and not 0.0 <= self.padding <= 4.0:
            _bad("padding", f"must be between 0 and 4 (a fraction of the selection size; got {self.padding})")
        self._check_features()

    def _check_features(self) -> None:
        if self.loras is not None:
            if len(self.loras) > MAX_LORAS:
                _bad("loras", f"may list at most {MAX_LORAS} LoRAs (got {len(self.loras)})")
            for item in self.loras:
                if (not isinstance(item, dict) or not isinstance(item.get("name"), str) or set(item) - {"name", "weight"}
                        or not isinstance(item.get("weight", 1.0), (int, float)) or isinstance(item.get("weight"), bool)):
                    _bad("loras", 'must be a list of {"name": string, "weight": number} objects')
                if not -4.0 <= float(item.get("weight", 1.0)) <= 4.0:
                    _bad("loras", f"weight of {item['name']!r} must be between -4 and 4")
        if not 0.0 <= self.control_strength <= 2.0:
            _bad("control_strength", f"must be between 0 and 2 (got {self.control_strength})")
        if not 0.0 <= self.variation_strength <= 1.0:
            _bad("variation_strength", f"must be between 0 and 1 (got {self.variation_strength})")
        if self.variation_seed is not None and not 0 <= self.variation_seed < 2**63:
            _bad("variation_seed", f"must be between 0 and 2^63-1 (got {self.variation_seed})")
        if self.upscale is not None and self.upscale not in (2, 4):
            _bad("upscale", f"must be 2 or 4 (got {self.upscale})")
        if not 0.5 <= self.refiner_switch < 1.0:
            _bad("refiner_switch", f"must be at least 0.5 and below 1 (got {self.refiner_switch})")


_FEATURES = {"control_strength", "variation_strength", "refiner", "refiner_switch", "replace"}
_TYPES: dict[str, tuple[type, ...]] = {
    "job": (str,), "prompt": (str,), "negative_prompt": (str,), "model": (str,), "scheduler": (str,),
    "steps": (int,), "seed": (int,), "batch": (int,), "width": (int,), "height": (int,), "x": (int,),
    "y": (int,), "canvas_width": (int,), "canvas_height": (int,), "grow": (int,), "feather": (int,),
    "guidance": (int, float), "strength": (int, float), "padding": (int, float), "preview": (bool,),
    "loras": (list,), "control_model": (str,), "control_strength": (int, float), "variation_seed": (int,),
    "variation_strength": (int, float), "upscale": (int,), "refiner": (bool,), "refiner_switch": (int, float),
    "replace": (bool,),
}
_OPTIONAL = {"model", "steps", "guidance", "width", "height", "scheduler", "canvas_width", "canvas_height", "grow",
             "feather", "padding", "loras", "control_model", "variation_seed", "upscale"}
MAX_LORAS = 8


def _check_field(name: str, value: Any) -> Any:
    if value is None and name in _OPTIONAL:
        return None
    types = _TYPES[name]
    if isinstance(value, bool) and bool not in types:
        ok = False
    else:
        ok = isinstance(value, types)
    if not ok:
        kind = " or ".join("number" if t is float else t.__name__ for t in types)
        raise ProtocolError(f"'{name}' must be a {kind} (got {type(value).__name__})", field=name)
    if float in types:
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise ProtocolError(f"'{name}' must be a finite number", field=name)
    return value


def _bad(name: str, text: str) -> None:
    raise ProtocolError(f"'{name}' {text}", field=name)


def check_version(data: dict[str, Any]) -> None:
    """Validate a ``hello``: the client must speak our protocol version."""
    version = data.get("protocol")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"unsupported protocol version {version!r}: this server speaks version {PROTOCOL_VERSION}; "
            "update the plugin or client to a matching Easel release",
            field="protocol",
            code="unsupported_protocol",
        )


def iter_frames(messages: Iterable[tuple[dict[str, Any], dict[str, Image] | None]]) -> list[str | bytes]:
    """Frames for several messages in order (convenience for tests and batch sends)."""
    out: list[str | bytes] = []
    for message, images in messages:
        out.extend(encode_message(message, images))
    return out
