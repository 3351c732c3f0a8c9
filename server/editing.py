"""Editor-independent plugin logic, shared by the Krita and GIMP adapters (stdlib only).

A plugin gathers editor state into an ``EditorState``, calls ``plan_request`` to get the
request and the region to send, runs it with a ``GenerationTask`` on a worker thread, and
turns each ``ResultImage`` into a layer named by ``layer_name`` at the offset it carries.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from .client import Client, ClientError, JobCancelled, JobFailed, ProgressInfo, Result, new_job_id
from .imaging.send_region import send_region
from .protocol import GenerateRequest, Image

TXT2IMG, IMG2IMG, INPAINT = "txt2img", "img2img", "inpaint"


def choose_mode(has_selection: bool, strength: float) -> str:
    """Selection → regenerate it; no selection and strength < 1 → refine the canvas; else generate."""
    if has_selection:
        return INPAINT
    return IMG2IMG if strength < 1.0 else TXT2IMG


def layer_name(prompt: str, seed: int, max_chars: int = 40) -> str:
    """A result layer's name: the prompt (shortened) and the seed, e.g. ``Easel: a red circle [1234]``."""
    text = " ".join(prompt.split()) or "(no prompt)"
    if len(text) > max_chars:
        text = text[: max_chars - 1].rstrip() + "…"
    return f"Easel: {text} [{seed}]"


def bgra_to_rgba(data: bytes | bytearray) -> bytes:
    """Swap the B and R channels of 8-bit pixels (Krita's memory order is BGRA)."""
    out = bytearray(data)
    out[0::4] = data[2::4]
    out[2::4] = data[0::4]
    return bytes(out)


rgba_to_bgra = bgra_to_rgba  # the swap is its own inverse


def selection_bounds(mask: bytes, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Bounds (x, y, w, h) of the non-zero pixels of a gray8 mask, or None when it is empty."""
    rows = [y for y in range(height) if any(mask[y * width : (y + 1) * width])]
    if not rows:
        return None
    top, bottom = rows[0], rows[-1]
    left, right = width, -1
    for y in range(top, bottom + 1):
        row = mask[y * width : (y + 1) * width]
        first = next((i for i, v in enumerate(row) if v), None)
        if first is None:
            continue
        last = width - 1 - next(i for i, v in enumerate(reversed(row)) if v)
        left, right = min(left, first), max(right, last)
    return left, top, right - left + 1, bottom - top + 1


def crop_bytes(data: bytes, width: int, channels: int, x: int, y: int, w: int, h: int) -> bytes:
    """Crop a row-major pixel buffer to the rectangle (x, y, w, h)."""
    stride, start = width * channels, x * channels
    return b"".join(data[(y + r) * stride + start : (y + r) * stride + start + w * channels] for r in range(h))


@dataclass
class Params:
    """What the painter set in the plugin's UI."""

    prompt: str
    negative_prompt: str = ""
    strength: float = 1.0
    steps: int | None = None
    guidance: float | None = None
    seed: int = -1
    batch: int = 1
    model: str | None = None
    scheduler: str | None = None


@dataclass
class EditorState:
    """The document as the plugin read it: RGBA pixels of the visible canvas (or a region)."""

    width: int  # document size
    height: int
    rgba: bytes | None = None  # the canvas region to send (None for plain generate)
    region: tuple[int, int, int, int] | None = None  # x, y, w, h of ``rgba`` in the document
    selection: bytes | None = None  # gray8 mask for ``region``, or None when nothing is selected


@dataclass
class PlannedRequest:
    mode: str
    request: GenerateRequest
    image: Image | None = None
    mask: Image | None = None
    notes: list[str] = field(default_factory=list)


def plan_request(state: EditorState, params: Params) -> PlannedRequest:
    """Build the request for the mode the document implies (see ``choose_mode``)."""
    has_selection = state.selection is not None and any(state.selection)
    mode = choose_mode(has_selection, params.strength)
    common = dict(prompt=params.prompt, negative_prompt=params.negative_prompt, steps=params.steps,
                  guidance=params.guidance, seed=params.seed, batch=params.batch, model=params.model,
                  scheduler=params.scheduler, canvas_width=state.width, canvas_height=state.height)
    if mode == TXT2IMG or state.rgba is None:
        request = GenerateRequest(job=new_job_id(), width=state.width, height=state.height, **common)
        return PlannedRequest(TXT2IMG, request)
    x, y, w, h = state.region or (0, 0, state.width, state.height)
    request = GenerateRequest(job=new_job_id(), strength=params.strength, x=x, y=y, **common)
    image = Image.rgba(w, h, state.rgba)
    mask = Image.gray(w, h, state.selection) if mode == INPAINT and state.selection is not None else None
    return PlannedRequest(mode, request, image, mask)


class GenerationTask(threading.Thread):
    """Runs one request on a worker thread; callbacks fire on that thread (marshal them to the UI).

    ``on_done(result, error)`` is always called exactly once: with a Result, or with None and
    a plain-words error message ("cancelled" when the job was cancelled).
    """

    def __init__(self, url: str, planned: PlannedRequest, *,
                 on_progress: Callable[[ProgressInfo], None] | None = None,
                 on_done: Callable[[Result | None, str | None], None] | None = None,
                 image_format: str = "rgba", client_name: str = "easel-plugin", token: str | None = None):
        super().__init__(daemon=True, name=f"easel-{planned.request.job}")
        self.url, self.planned = url, planned
        self.on_progress, self.on_done = on_progress, on_done
        self._client = Client(url, image_format=image_format, client_name=client_name, token=token)
        self._cancel = threading.Event()

    @property
    def job(self) -> str:
        return self.planned.request.job

    def cancel(self) -> None:
        self._cancel.set()
        try:
            self._client.cancel(self.job)
        except ClientError:
            pass

    def run(self) -> None:
        result, error = None, None
        try:
            with self._client as client:
                if self._cancel.is_set():
                    raise JobCancelled(self.job)
                p = self.planned
                result = client.generate(p.request, p.image, p.mask, on_progress=self.on_progress)
        except JobCancelled:
            error = "cancelled"
        except JobFailed as exc:
            error = f"{exc} (field: {exc.field})" if exc.field else str(exc)
        except ClientError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a plugin must never die with a traceback
            error = f"unexpected error: {exc!r}"
        if self.on_done:
            self.on_done(result, error)


# ----------------------------------------------------------------------------- plugin UI helpers
# Small pure helpers both editor plugins use between their UI and the functions above.

Box = tuple[int, int, int, int]  # x, y, width, height


def read_plan(width: int, height: int, selection_box: Box | None, strength: float) -> tuple[str, Box | None]:
    """What a plugin reads from the document before ``plan_request``: the mode and the region.

    ``selection_box`` is the selection's bounds in the document (None or empty: no selection).
    Text to image reads nothing (region None); refine reads the whole canvas; regenerating a
    selection reads the selection's context region (``imaging.send_region``), not the canvas.
    """
    has_selection = selection_box is not None and selection_box[2] > 0 and selection_box[3] > 0
    mode = choose_mode(has_selection, strength)
    if mode == TXT2IMG:
        return mode, None
    if mode == INPAINT:
        return mode, tuple(send_region(selection_box, (width, height)))
    return mode, (0, 0, width, height)


def model_choices(welcome: dict) -> tuple[list[str], str | None]:
    """Model ids a server offers (from its ``welcome``) and its default model."""
    ids = [m["id"] if isinstance(m, dict) else str(m) for m in welcome.get("models", [])]
    default = welcome.get("default_model") or (ids[0] if ids else None)
    return ids, default


def progress_text(info: ProgressInfo) -> tuple[int, str]:
    """A progress event as a percentage (0..100) and a few plain words for the UI."""
    if info.stage == "queued":
        return 0, info.message or "waiting in the server's queue"
    if info.stage == "load":
        percent = int(100 * info.step / info.total) if info.total else 0
        return percent, info.message or "loading the model"
    if info.total:
        return int(100 * info.step / info.total), f"step {info.step} of {info.total}"
    return 0, info.message or "working"


def strength_text(percent: int) -> str:
    """What the strength slider means at ``percent``: 100 generates, lower refines the canvas."""
    if percent >= 100:
        return "100%: new image (or a new selection content)"
    return f"{percent}%: refine what is on the canvas"


def parse_seed(text: str) -> int:
    """A seed typed by the painter: digits give a fixed seed, anything else -1 (random)."""
    text = text.strip()
    if not text.isdigit():
        return -1
    return min(int(text), 2**63 - 1)


_SETTING_FIELDS = ("prompt", "negative_prompt", "strength", "steps", "guidance", "seed", "batch", "model")


def params_to_settings(params: Params) -> dict[str, str]:
    """``Params`` as strings for an editor's settings store (None becomes "")."""
    out = {}
    for name in _SETTING_FIELDS:
        value = getattr(params, name)
        out[name] = "" if value is None else str(value)
    return out


def params_from_settings(values: dict[str, str], defaults: Params | None = None) -> Params:
    """The inverse of ``params_to_settings``; a missing or unreadable value keeps its default."""
    merged = {name: getattr(defaults or Params(prompt=""), name) for name in Params.__dataclass_fields__}
    kinds = {"strength": float, "guidance": float, "steps": int, "seed": int, "batch": int}
    for name in _SETTING_FIELDS:
        raw = values.get(name)
        if raw is None:
            continue
        if name in ("prompt", "negative_prompt"):
            merged[name] = raw
        elif raw == "" and name in ("model", "steps", "guidance"):
            merged[name] = None  # "" stands for None: the server's default
        elif name == "model":
            merged[name] = raw
        else:
            try:
                merged[name] = kinds[name](raw)
            except ValueError:
                continue
    merged["strength"] = min(max(merged["strength"], 0.0), 1.0)
    merged["batch"] = max(1, merged["batch"])
    merged["seed"] = max(-1, merged["seed"])
    return Params(**merged)


# ----------------------------------------------------------------------------- plugin settings
# (appended for the GIMP plug-in; editor-independent, so the Krita plugin can use them too)

URL_ENV = "EASEL_URL"
DEFAULT_SERVER_URL = "ws://127.0.0.1:8765"


def resolve_url(explicit: str | None, environ: dict[str, str] | None = None, saved: str | None = None) -> str:
    """The server URL to use: the one given, else ``$EASEL_URL``, else the saved one, else the default.

    ``host:port`` without a scheme gets ``ws://``; surrounding blanks are dropped.
    """
    for candidate in (explicit, (environ or {}).get(URL_ENV), saved, DEFAULT_SERVER_URL):
        text = (candidate or "").strip()
        if text:
            return text if "://" in text else f"ws://{text}"
    return DEFAULT_SERVER_URL


def params_from_ui(prompt: str, negative_prompt: str = "", strength: float = 1.0, steps: int = 0,
                   guidance: float = -1.0, seed: int = -1, batch: int = 1, model: str = "") -> Params:
    """Params from editor widgets, whose 'use the default' values are 0 steps, a negative
    guidance and an empty model name (widgets cannot hold None)."""
    return Params(prompt=prompt.strip(), negative_prompt=negative_prompt.strip(), strength=float(strength),
                  steps=int(steps) if steps and steps > 0 else None,
                  guidance=float(guidance) if guidance is not None and guidance >= 0 else None,
                  seed=int(seed), batch=int(batch), model=model.strip() or None)


def check_request(planned: PlannedRequest) -> str | None:
    """Validate a planned request with the server's own rules; a plain-words problem or None."""
    from .protocol import ProtocolError

    try:
        GenerateRequest.from_message(planned.request.to_message())
    except ProtocolError as exc:
        return f"bad parameter: {exc}"
    return None

