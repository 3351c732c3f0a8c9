"""Easel protocol v1: a sans-IO core shared by the server, the client and both plugins.

Stdlib only (the plugins bundle ``easel.client`` whole). It knows how to turn messages into
websocket frames and back, and how to validate a generation request; it does no I/O.

A message is one JSON text frame. A message may carry images: its ``attachments`` key
lists their names, and exactly that many binary frames follow it, in order, each one an
image frame (see ``encode_image``). docs/protocol.md describes every byte.

The request's list items (``easel.client.items``) and the protocol's error (``easel.client.codes``) are
part of this API too: ``__all__`` names them with the rest.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

from .codes import ClientMessage, ErrorCode, ProtocolError, ServerMessage, enum_table, error_message
from .fields import BIG, Declared, FieldError, declare, declared, item_types, markdown_table, replace_block, to_wire
from .items import (
    CONTROL_KINDS,
    CONTROLNET_KINDS,
    LORA_WEIGHT,
    MAX_CONTROLS,
    MAX_LORAS,
    MAX_REGIONS,
    REFERENCE_KINDS,
    Control,
    Region,
    _check_loras,
    parse_control,
    parse_lora,
    parse_reference,
    parse_region,
)

__all__ = ["CONTROLNET_KINDS", "CONTROL_KINDS", "DEFAULT_MAX_MESSAGE_BYTES", "FORMAT_CODES", "FORMAT_NAMES", "LORA_WEIGHT", "MAX_CONTROLS",
           "MAX_LORAS", "MAX_REGIONS", "PROTOCOL_VERSION", "REFERENCE_KINDS", "Assembler", "Control", "GenerateRequest", "Image",
           "Message", "ProtocolError", "Region", "check_version", "decode_image", "doc_tables", "encode_image", "encode_message",
           "error_message", "job_of_frame", "parse_control", "parse_lora", "parse_reference", "parse_region", "png_size",
           "request_fields"]

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


# ----------------------------------------------------------------------------- requests

SCHEDULERS = ("euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "ddim", "lcm")
HIRES = ("auto", "on", "off")  # the second pass: when it helps, whenever the region needs it, or never
#: How a selection is regenerated (docs/imaging.md, "Selection modes"); ``auto`` picks one from the selection and strength.
INPAINT_MODES = ("auto", "refine", "fill", "add", "remove", "expand")
MAX_EXPAND = 4096  #: the most pixels ``expand`` grows one side by (the server's size limits apply to the grown image)


def _check_expand(value: list) -> str | None:
    if len(value) != 4 or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_EXPAND
                                  for v in value):
        return (f"must be four whole numbers of pixels [LEFT, TOP, RIGHT, BOTTOM], each 0..{MAX_EXPAND} "
                f"(got {value!r})")
    return None


def parse_expand(text: str) -> list:
    """``LEFT,TOP,RIGHT,BOTTOM`` -> four ints; ProtocolError (field expand) for anything else."""
    parts = text.split(",")
    try:
        values = [int(v) for v in parts]
    except ValueError:
        values = []
    if len(parts) != 4 or len(values) != 4:
        raise ProtocolError(f"--expand {text!r}: write LEFT,TOP,RIGHT,BOTTOM in pixels (e.g. 0,0,128,0)",
                            field="expand")
    return values


def _non_empty(value: str) -> str | None:
    return None if value else "must be a non-empty string chosen by the client"


_PIXELS = "a positive number of pixels"

#: What a control layer's image guides, for its ControlNet (docs/features.md lists the models per family).
@dataclass
class GenerateRequest:
    """Everything one generation needs. Images travel as attachments ``image`` and ``mask``.

    Mode follows from the attachments: none = text to image; ``image`` = image to image;
    ``image`` + ``mask`` = inpaint (mask 255 = regenerate, soft values blend).
    ``x``/``y`` place the sent image in the document; results come back with document offsets.
    Each field is declared once (``declare``): its checks, the docs table and the CLI flags follow.
    """

    job: str = declare(help="client-chosen id, unique among active jobs", flag=None, validator=_non_empty, group="job")
    prompt: str = declare(help="what to paint", group="conditioning")
    negative_prompt: str = declare("", "what to avoid", flag="--negative", group="conditioning")
    model: str | None = declare(None, "a model id from `welcome.models`", default_text="server default", group="sampling")
    steps: int | None = declare(None, "denoising steps; a server may allow fewer (`welcome.limits.max_steps`)",
                                low=1, default_text="model default", group="sampling")
    guidance: float | None = declare(None, "CFG scale: how closely the prompt is followed", low=0.0, high=100.0,
                                     default_text="model default", group="sampling")
    seed: int = declare(-1, "-1 = random; image i of a batch uses `seed` + i; the seeds used are returned",
                        low=-1, high=BIG, hint="-1 picks a random seed", group="sampling")
    batch: int = declare(1, "images from one request; a server may allow fewer (`welcome.limits.max_batch`)",
                         low=1, high=64, group="output")
    width: int | None = declare(None, "text to image width", low=1, hint=_PIXELS, default_text="native size", group="canvas")
    height: int | None = declare(None, "text to image height", low=1, hint=_PIXELS, default_text="native size", group="canvas")
    scheduler: str | None = declare(None, "the sampler (`welcome.schedulers`)", choices=SCHEDULERS,
                                    default_text="the model's own", group="sampling")
    strength: float = declare(1.0, "with an image: how much changes (1 = from scratch)", low=0.0, high=1.0,
                              hint="use 1.0 to generate from scratch", group="sampling")
    x: int = declare(0, "where the sent `image` sits in the document (left)", flag=None, group="canvas")
    y: int = declare(0, "where the sent `image` sits in the document (top)", flag=None, group="canvas")
    canvas_width: int | None = declare(None, "document width (context is clamped to the document)", low=1,
                                       hint=_PIXELS, default_text="image size", flag=None, group="canvas")
    canvas_height: int | None = declare(None, "document height", low=1, hint=_PIXELS, default_text="image size",
                                        flag=None, group="canvas")
    grow: int | None = declare(None, "selection work: grow the selection by this many pixels (docs/imaging.md)",
                               low=0, high=1024, default_text="server default", metavar="PX", group="canvas")
    feather: int | None = declare(None, "selection work: blend the result's edge over this many pixels",
                                  low=0, high=1024, default_text="server default", metavar="PX", group="canvas")
    padding: float | None = declare(None, "selection work: context around the selection, a fraction of its size",
                                    low=0.0, high=4.0, default_text="server default", metavar="F", group="canvas")
    preview: bool = declare(True, "send step previews", flag=None, group="output")
    loras: list | None = declare(
        None, 'LoRAs from `welcome.loras`, weights -4..4: `[{"name": "ink.safetensors", "weight": 0.8}]` '
        "(docs/features.md)", validator=_check_loras, flag="--lora", metavar="NAME[:WEIGHT]", parse=parse_lora, group="conditioning")
    control_model: str | None = declare(None, "ControlNet id from `welcome.control_models`; the guide image is "
                                              "attachment `control`", metavar="ID", group="conditioning")
    control_strength: float = declare(1.0, "how strongly the ControlNet guide steers (0 = not at all)", low=0.0,
                                      high=2.0, wire_default=False, metavar="F", group="conditioning")
    controls: list | None = declare(
        None, "control layers: guide images (attachments), each steering its kind's ControlNet (docs/features.md)",
        items=Control, high=MAX_CONTROLS, flag="--control", metavar="KIND=IMAGE[@STRENGTH[@START-END]]",
        parse=parse_control, group="conditioning",
        also=(("--reference", "[KIND=]IMAGE[@STRENGTH]", "a reference image layer (IP-Adapter), KIND one of "
               + ", ".join(REFERENCE_KINDS) + " (default reference); repeatable", parse_reference),))
    regions: list | None = declare(
        None, "regions: a mask (attachment) and a prompt each, added to `prompt` where the mask is white; the base "
        "prompt alone elsewhere (docs/features.md)", items=Region, high=MAX_REGIONS, flag="--region",
        metavar="MASK=PROMPT", parse=parse_region, group="conditioning")
    variation_seed: int | None = declare(None, "blend this seed's noise into `seed`'s", low=0, high=BIG,
                                         metavar="N", group="sampling")
    variation_strength: float = declare(0.0, "0 = only `seed`'s noise, 1 = only `variation_seed`'s", low=0.0,
                                        high=1.0, wire_default=False, metavar="F", group="sampling")
    upscale: int | None = declare(None, "tiled upscale of `image`, refined at `strength` (1.0 = the default 0.35, "
                                        "0 = plain Lanczos); the result is `upscale` × the image, at `upscale` × "
                                        "`x`, `y` (docs/features.md)", choices=(2, 4), group="canvas")
    upscaler: str | None = declare(None, "upscaler model from `welcome.upscalers` (ESRGAN & co.) that makes the "
                                         "`upscale` before the refine (`strength` 0 = the upscaler alone)",
                                   default_text="Lanczos", metavar="NAME", group="canvas")
    hires: str = declare("auto", "second pass when the model's first pass is well below the region's size (more "
                                 "than 1.5× a side): upscale it, refine at the region's size (docs/imaging.md). "
                                 "`auto`: where the model family profits (not the toy demo model); `on`: always "
                                 "then; `off`: never", choices=HIRES, wire_default=False, metavar="auto|on|off", group="canvas")
    hires_strength: float | None = declare(None, "how much the second pass repaints (0 = a plain upscale)", low=0.0,
                                           high=1.0, default_text="per model family", metavar="F", group="canvas")
    exact_size: bool = declare(False, "run the model at the requested size (the region's, 8-px rounded) instead "
                                      "of its native area: faster for small requests, no second pass",
                               wire_default=False, group="canvas")
    inpaint_mode: str = declare("auto", "how a selection is regenerated: `refine` (keep it as context), `fill` (new "
                                        "content continuing the surroundings), `add` (a new object from the prompt), "
                                        "`remove` (what is selected, prompt-free), `expand` (outpaint); `auto`: "
                                        "`expand` with `expand` margins or a selection spanning the canvas, `refine` "
                                        "below strength 1, else `fill` (docs/imaging.md)", choices=INPAINT_MODES,
                                wire_default=False, metavar="MODE", group="canvas")
    expand: list | None = declare(None, "grow the canvas by [LEFT, TOP, RIGHT, BOTTOM] pixels and paint the new "
                                        "part (outpaint); the result layer covers the grown picture, its `x`, `y` "
                                        "in the old canvas's coordinates (negative: left of / above it)",
                                  validator=_check_expand, parse=parse_expand, whole=True,
                                  metavar="LEFT,TOP,RIGHT,BOTTOM", group="canvas")
    refiner: bool = declare(False, "SDXL: the server's refiner model (`welcome.refiner`) does the last steps",
                            wire_default=False, group="sampling")
    refiner_switch: float = declare(0.8, "fraction of the denoising done by the base model before the refiner",
                                    low=0.5, high=1.0, below_high=True, wire_default=False, metavar="F", group="sampling")
    replace: bool = declare(False, "live painting: this request replaces the client's queued `replace` jobs (they "
                                   "end with `cancelled`, `reason: \"replaced\"`) and may stop its running one at the "
                                   "next step (only a young frame started from idle: see Live painting below, so "
                                   "frames keep coming at any input rate); a stale job that finished anyway is never "
                                   "delivered. Live results are not stored", wire_default=False, flag=None, group="output")

    def to_message(self) -> dict[str, Any]:
        return {"type": ClientMessage.GENERATE, **to_wire(self)}

    @classmethod
    def from_message(cls, data: dict[str, Any]) -> GenerateRequest:
        """Validate a ``generate`` message's fields; raises ProtocolError naming the field."""
        known = declared(cls)
        unknown = sorted(set(data) - set(known) - {"type", "attachments"})
        if unknown:
            raise ProtocolError(f"unknown field {unknown[0]!r} in generate", field=unknown[0])
        for name in (n for n, d in known.items() if d.required and n not in data):
            raise ProtocolError(f"'{name}' is missing: generate needs a job id and a prompt", field=name)
        try:
            return cls(**{name: d.check(data[name]) for name, d in known.items() if name in data})
        except FieldError as exc:
            raise ProtocolError(str(exc), field=exc.field) from None


def request_fields() -> dict[str, Declared]:
    """``GenerateRequest``'s declared fields by name: types, ranges, defaults and help."""
    return declared(GenerateRequest)


REQUEST_TABLE = ("<!-- generate fields: generated from GenerateRequest by "
                 "`python -m easel.client.protocol --markdown docs/protocol.md`; do not edit -->",
                 "<!-- end of generate fields -->")


def check_version(data: dict[str, Any]) -> None:
    """Validate a ``hello``: the client must speak our protocol version."""
    version = data.get("protocol")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"unsupported protocol version {version!r}: this server speaks version {PROTOCOL_VERSION}; "
            "update the plugin or client to a matching Easel release",
            field="protocol",
            code=ErrorCode.UNSUPPORTED_PROTOCOL,
        )


def doc_tables() -> dict[tuple[str, str], str]:
    """The generated tables of docs/protocol.md by their (begin, end) marker lines."""
    def markers(what: str) -> tuple[str, str]:
        return (f"<!-- {what}: generated by `python -m easel.client.protocol --markdown docs/protocol.md`; "
                "do not edit -->", f"<!-- end of {what} -->")

    items = {markers(f"{cls.__name__} fields"): markdown_table(cls) for cls in item_types(GenerateRequest)}
    return {REQUEST_TABLE: markdown_table(GenerateRequest), **items,
            markers("client messages"): enum_table(ClientMessage, "type", "fields", "answer"),
            markers("server messages"): enum_table(ServerMessage, "type", "fields"),
            markers("error codes"): enum_table(ErrorCode, "code", "meaning")}


def _main(argv: list[str]) -> int:
    """``--markdown``: print the generated tables; ``--markdown FILE``: rewrite them in FILE."""
    if not argv or argv[0] != "--markdown" or len(argv) > 2:
        print("usage: python -m easel.client.protocol --markdown [docs/protocol.md]")
        return 2
    tables = doc_tables()
    if len(argv) == 1:
        print("\n".join(tables.values()), end="")
        return 0
    with open(argv[1], encoding="utf-8") as f:
        text = f.read()
    present = [(markers, table) for markers, table in tables.items() if markers[0] in text]
    if not present:
        print(f"{argv[1]} has none of the generated tables' markers, e.g. {REQUEST_TABLE[0]}")
        return 2
    for (begin, end), table in present:
        text = replace_block(text, begin, end, table)
    with open(argv[1], "w", encoding="utf-8") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))

