"""The protocol's names as enums (message types each way, error codes, each with its docs text) and its error.

Each member is a ``str`` (it compares equal to, and serialises as, its wire name), declared once
with what docs/protocol.md says of it; ``python -m easel.client.protocol --markdown`` writes those
tables and a test checks them. Stdlib only: bundled into the plugins with the rest of ``easel.client``.
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class WireName(str, Enum):
    """A protocol name: the member's value is the wire string; ``doc`` holds the docs columns after it."""

    doc: tuple[str, ...]

    def __new__(cls, value: str, *doc: str) -> WireName:
        member = str.__new__(cls, value)
        member._value_ = value
        member.doc = doc
        return member

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class PreprocessKind(WireName):
    """The ``kind`` of a ``preprocess`` message: the control-layer guide made from the picture."""

    CANNY = "canny", "white edges on black (OpenCV Canny, thresholds 100/200)"
    DEPTH = "depth", "a depth map, near = bright (Depth Anything V2 or DPT)"
    SEGMENTATION = "segmentation", "ADE20K class colours (UperNet or Segformer trained on ADE20K)"
    LINEART = "lineart", "white line art on black (controlnet-aux's lineart annotator; needs the annotators extra)"
    SOFTEDGE = "softedge", "soft white edges on black (controlnet-aux's HED annotator; needs the annotators extra)"
    NORMAL = "normal", "a normal map from the depth model's slopes, facing the viewer = (128, 128, 255)"
    POSE = "pose", "an OpenPose skeleton on black (ViTPose keypoints, the whole picture as one person)"


class ClientMessage(WireName):
    """What a client sends: fields, and what the server answers."""

    HELLO = "hello", "`protocol`, `client`, `image_format`", "`welcome`"
    GENERATE = ("generate", "see below; attachments `image`, `mask`",
                "`queued`, `progress`…, then `result`, `error` or `cancelled`")
    CANCEL = "cancel", "`job`", "the job ends with `cancelled` (queued: at once; running: within one step)"
    MODELS = "models", "—", "`models` with the same list as `welcome.models`"
    FETCH = ("fetch", "`job`", "the stored `result` of a finished job (with its images), or `status` `running` (the "
             "running job is handed to this connection and its `result` follows), or `error` `not_found`")
    ACK = "ack", "`job`", "`acked` (`found`: bool); the stored result is deleted"
    HISTORY = ("history", "`limit` (default 50)", "`history` with `jobs`: recent stored results, newest first "
               "(`job`, `created`, `parameters`, `images`)")
    PREPROCESS = ("preprocess", f"`job`, `kind` ({', '.join(f'`{k}`' for k in PreprocessKind)}); attachment `image`",
                  "`progress`…, then `control_image` or `error` (see [From image](#from-image-preprocess))")


class ServerMessage(WireName):
    """What the server sends: fields."""

    WELCOME = "welcome", "see Handshake above"
    QUEUED = "queued", "`job`, `position` (1 = next)"
    PROGRESS = ("progress", "`job`, `stage` (`load`, `denoise`, `upscale`: steps over all tiles, `message` "
                "\"tile k/N\", or `preprocess`), `step`, `total`, `message`; attachment `preview` (small, optional). A job with a "
                "second pass (docs/imaging.md) counts both passes in one `denoise` bar; the second pass's `message` "
                "is \"second pass\" or \"second pass, tile k/N\"")
    RESULT = ("result", "`job`, `images` [{`seed`, `x`, `y`, `width`, `height`}], `parameters`, `timings`, `worker`; "
              "attachments `image0`, `image1`, …. `parameters.notes` (when present): sentences the painter should "
              "read about this result, also sent as the job's progress `message` (the demo model's enlarged big "
              "pictures and upscales, docs/imaging.md)")
    CANCELLED = "cancelled", "`job`, `reason` (`\"replaced\"` for superseded live jobs)"
    STATUS = "status", "`job`, `state` (answer to `fetch` of a running job)"
    ACKED = "acked", "`job`, `found`"
    HISTORY = "history", "`jobs` (see `history` above)"
    ERROR = "error", "`job` (or null), `code`, `field` (or null), `message`"
    MODELS = "models", "`models`"
    CONTROL_IMAGE = ("control_image", "`job`, `kind`, `width`, `height`; attachment `image`: the guide, RGB, the "
                     "size of the picture sent (answer to `preprocess`)")


class ErrorCode(WireName):
    """The ``code`` of an ``error`` message: what went wrong, for clients to act on."""

    BAD_REQUEST = ("bad_request", "a field is wrong: unknown scheduler, strength outside 0..1, steps < 1, size not "
                   "positive or over the limit, image and mask of different sizes, undecodable image bytes, missing "
                   "or unknown fields, malformed JSON (field `json`)")
    UNKNOWN_TYPE = "unknown_type", "a message `type` the server does not know"
    HELLO_REQUIRED = "hello_required", "a message before `hello`"
    UNSUPPORTED_PROTOCOL = ("unsupported_protocol", "field `protocol`: the client speaks another protocol version; "
                            "the message names both and says to update the plugin")
    QUEUE_FULL = "queue_full", "the client has too many jobs waiting"
    NOT_FOUND = "not_found", "`fetch` of a job with no stored result"
    UNAVAILABLE = "unavailable", "`fetch`, `ack` or `history` on a server started without a result store"
    UNKNOWN_MODEL = "unknown_model", "field `model`: a model the server does not serve; the message lists those it does"
    MODEL_LOAD_FAILED = "model_load_failed", "the model could not be loaded; the message says why"
    OUT_OF_MEMORY = "out_of_memory", "after one retry with memory savers"
    NAN = "nan", "the model produced NaN values"
    ENGINE_CLOSED = ("engine_closed", "the job reached the engine after the server began shutting down; nothing was "
                     "generated, send it again once the server is back")
    UNSUPPORTED_FEATURE = "unsupported_feature", "a request field the chosen model does not support (named)"
    UNKNOWN_LORA = "unknown_lora", "a LoRA the server does not offer ([features.md](features.md))"
    LORA_FAILED = "lora_failed", "a LoRA that does not fit the model or cannot be loaded"
    UNKNOWN_CONTROL_MODEL = "unknown_control_model", "a ControlNet the server does not offer"
    CONTROL_MODEL_MISMATCH = "control_model_mismatch", "a ControlNet of another model family"
    NO_CONTROL_MODEL = ("no_control_model", "a control layer's kind has no ControlNet for the model's family on this "
                        "server; the message names the kind and the model to download")
    PREPROCESSOR_UNAVAILABLE = ("preprocessor_unavailable", "field `kind`: a `preprocess` kind this server cannot "
                                "make (no library for it, or its weights are not here); the message says why and "
                                "how to fetch the weights")
    NO_REFINER = "no_refiner", "a refiner job on a server without a refiner"
    WORKER_FAILED = ("worker_failed", "with `easel serve --ray`: the replica or the whole Ray cluster failed, after "
                     "one retry; the message names the cause and the fix "
                     "([scaling.md](scaling.md#a-ray-serve-cluster-a-studio))")
    INTERNAL = "internal", "a bug; the server logs it and keeps serving"


class ProtocolError(ValueError):
    """A frame or message that does not follow the protocol. ``field`` names what is wrong."""

    def __init__(self, message: str, field: str | None = None, code: str = "bad_request"):
        super().__init__(message)
        self.field = field
        self.code = code

    def to_message(self, job: str | None = None) -> dict[str, Any]:
        return error_message(self.code, str(self), field=self.field, job=job)


def error_message(code: str, message: str, field: str | None = None, job: str | None = None) -> dict[str, Any]:
    return {"type": ServerMessage.ERROR, "job": job, "code": code, "field": field, "message": message}


def enum_table(cls: type[WireName], *headers: str) -> str:
    """The members of ``cls`` as a markdown table: the wire name, then its ``doc`` columns."""
    rows = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    rows += ["| " + " | ".join((f"`{m.value}`", *m.doc)) + " |" for m in cls]
    return "\n".join(rows) + "\n"
