"""Easel protocol v1: a sans-IO core shared by the server, the client and both plugins.

Stdlib only (the plugins bundle ``easel.client`` whole). It knows how to turn messages into
websocket frames and back (``easel.client.frames``, re-exported here), and how to validate a generation
request; it does no I/O.

A message is one JSON text frame. A message may carry images: its ``attachments`` key
lists their names, and exactly that many binary frames follow it, in order, each one an
image frame (see ``encode_image``). docs/protocol.md describes every byte.

The request's list items (``easel.client.items``) and the protocol's error (``easel.client.codes``) are
part of this API too: ``__all__`` names them with the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .codes import ClientMessage, ErrorCode, ProtocolError, ServerMessage, enum_table, error_message
from .fields import BIG, Declared, FieldError, declare, declared, item_types, markdown_table, replace_block, to_wire
from .frames import (
    DEFAULT_MAX_MESSAGE_BYTES,
    FORMAT_CODES,
    FORMAT_NAMES,
    PROTOCOL_VERSION,
    Assembler,
    Image,
    Message,
    decode_image,
    encode_image,
    encode_message,
    job_of_frame,
    png_size,
)
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


# ----------------------------------------------------------------------------- requests

SCHEDULERS = ("euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "ddim", "lcm")
HIRES = ("auto", "on", "off")  # the second pass: when it helps, whenever the region needs it, or never
#: How a selection is regenerated (docs/imaging.md, "Selection modes"); ``auto`` picks one from the selection and strength.
INPAINT_MODES = ("auto", "refine", "fill", "add", "remove", "expand", "background")
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
        also=(("--reference", "[KIND=]IMAGE[@STRENGTH][#mask=MASK]", "a reference image layer (IP-Adapter), KIND "
               "one of " + ", ".join(REFERENCE_KINDS) + " (default reference), acting where MASK is white (default: "
               "everywhere); repeatable", parse_reference),))
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
                                        "`remove` (what is selected, prompt-free), `expand` (outpaint), `background` "
                                        "(a new background from the prompt around the subject a background-removal "
                                        "model finds: in the selection, or in the whole `image` without a `mask`); "
                                        "`auto`: `expand` with `expand` margins or a selection spanning the "
                                        "canvas, `refine` below strength 1, else `fill` (docs/imaging.md)",
                                choices=INPAINT_MODES,
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

