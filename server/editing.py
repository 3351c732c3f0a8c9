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



# ----------------------------------------------------------------------------- live painting
# (appended for live painting, issue #9; editor-independent: the editor polls its canvas, hashes
# the region it would send, and lets a ``LiveSession`` decide when a request goes out through one
# long-lived ``LiveConnection``)

LIVE_STEPS = 4  #: live steps for models without a few-step default (turbo/LCM models use their own)
LIVE_MAX_STEPS = 8  #: a Steps field of 1..8 is used as it is while live; higher or "default": the live default
LIVE_LAYER_NAME = "Easel Live"


def live_steps(model: dict | None, requested: int | None = None) -> int:
    """Steps of a live frame: the painter's own if 1..LIVE_MAX_STEPS, else the model's few-step
    default (``few_step`` models), else ``LIVE_STEPS``."""
    if requested is not None and 1 <= requested <= LIVE_MAX_STEPS:
        return requested
    if model and model.get("few_step") and model.get("default_steps"):
        return int(model["default_steps"])
    return LIVE_STEPS


def find_model(welcome: dict | None, model_id: str | None) -> dict | None:
    """The ``welcome.models`` entry for ``model_id`` (None: the server's default model)."""
    welcome = welcome or {}
    wanted = model_id or model_choices(welcome)[1]
    for entry in welcome.get("models", []):
        if isinstance(entry, dict) and entry.get("id") == wanted:
            return entry
    return None


def live_params(params: Params, model: dict | None, seed: int) -> Params:
    """The painter's parameters as a live frame: one image, few steps, the session's fixed seed."""
    return Params(prompt=params.prompt, negative_prompt=params.negative_prompt, strength=params.strength,
                  steps=live_steps(model, params.steps), guidance=params.guidance, seed=seed, batch=1,
                  model=params.model, scheduler=params.scheduler)


def fingerprint(*parts: bytes | str | None) -> str:
    """A cheap, collision-safe hash of the region bytes (and anything else) a live frame depends on."""
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        data = b"\x00" if part is None else part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def params_key(params: Params, region: Box | None = None) -> str:
    """What, besides the pixels, makes a live frame differ: the parameters and the region read."""
    return repr((params.prompt, params.negative_prompt, round(params.strength, 4), params.steps, params.guidance,
                 params.model, params.scheduler, params.seed, region))


def plan_live(state: EditorState, params: Params) -> PlannedRequest:
    """``plan_request`` for a live frame: replaces this client's older live work, no step previews."""
    planned = plan_request(state, params)
    planned.request.replace = True
    planned.request.preview = False
    return planned


@dataclass
class LiveConfig:
    """When a live frame goes out (seconds)."""

    poll_s: float = 0.15  #: how often the editor compares the canvas (it has no change events)
    typing_quiet_s: float = 0.4  #: prompt/settings edits wait for a pause in typing
    restart_fraction: float = 0.25  #: replace a running frame only while it is younger than this share of a frame
    stall_s: float = 15.0  #: a frame with no answer after this long is replaced anyway


@dataclass
class _Sent:
    seq: int
    sent_at: float
    change_at: float  # when the oldest change this frame contains was seen


class LiveSession:
    """Decides when a live frame is sent and which results are shown (pure logic, no I/O).

    The editor calls ``observe`` at every poll with a fingerprint of the region it would send and
    a key of the parameters; ``due`` says whether to send now; ``sent`` / ``finished`` follow the
    job. Canvas changes go out at once; parameter edits after a typing pause. One frame runs at
    a time: the newest state waits and goes out the moment the running frame ends, so a
    continuous stroke gets a steady rate of frames instead of cancelling every one. Only while a
    frame is young (the first ``restart_fraction`` of a frame) is it replaced at once, since
    restarting costs less than waiting; a frame that replaced another is never replaced itself.
    A result older than one already shown is never shown. The seed is fixed for the session
    (the painter's, or one drawn here).
    """

    def __init__(self, seed: int = -1, config: LiveConfig | None = None, clock: Callable[[], float] | None = None):
        import random
        import time

        self.seed = seed if seed >= 0 else random.randrange(0, 2**32)
        self.config = config or LiveConfig()
        self.clock = clock or time.monotonic
        self._canvas: str | None = None
        self._params: str | None = None
        self._sent_key: tuple[str, str] | None = None
        self._changed_at: float | None = None
        self._typed_at: float | None = None
        self._jobs: dict[str, _Sent] = {}
        self._newest: str | None = None
        self._restarted = False  # the running frame replaced another one
        self._seq = self._shown_seq = 0
        self.frame_s: float | None = None  # running estimate of one frame's time (sent to result)
        self.sent_count = self.shown_count = self.dropped_count = 0
        self.latencies: list[float] = []  # change seen -> result shown, the last 50 frames
        self.shown_at: list[float] = []  # when the last 50 frames were shown

    # -- what the editor sees ------------------------------------------------------------------
    def follow_seed(self, seed: int) -> int:
        """The painter's seed field: a fixed seed typed while live becomes the session's; -1
        (random) keeps the one drawn when the session began. Returns the session's seed."""
        if seed >= 0:
            self.seed = seed
        return self.seed

    def observe(self, canvas_key: str, params_key: str, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        if params_key != self._params:
            if self._params is not None:
                self._typed_at = now  # an edit: wait for a pause
            self._params = params_key
            self._changed_at = self._changed_at or now
        if canvas_key != self._canvas:
            self._canvas = canvas_key
            self._changed_at = self._changed_at or now
        if (self._canvas, self._params) == self._sent_key:
            self._changed_at = None  # changed back to what was sent

    @property
    def pending(self) -> bool:
        """A state was seen that no sent frame shows yet."""
        return self._canvas is not None and (self._canvas, self._params) != self._sent_key

    @property
    def in_flight(self) -> str | None:
        """The newest sent frame while it has not ended."""
        return self._newest

    @property
    def up_to_date(self) -> bool:
        return not self.pending and self._newest is None

    def due(self, now: float | None = None) -> bool:
        """Whether to send the current state now."""
        now = self.clock() if now is None else now
        if not self.pending:
            return False
        if self._typed_at is not None and now - self._typed_at < self.config.typing_quiet_s:
            return False
        if self._newest is None:
            return True
        elapsed = now - self._jobs[self._newest].sent_at
        if elapsed >= self.config.stall_s:
            return True
        return (not self._restarted and self.frame_s is not None
                and elapsed < self.config.restart_fraction * self.frame_s)

    # -- the job's life --------------------------------------------------------------------------
    def sent(self, job: str, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        self._seq += 1
        self._jobs[job] = _Sent(self._seq, now, self._changed_at if self._changed_at is not None else now)
        self._restarted = self._newest is not None
        self._newest, self._sent_key = job, (self._canvas or "", self._params or "")
        self._changed_at = self._typed_at = None
        self.sent_count += 1

    def finished(self, job: str, delivered: bool, now: float | None = None) -> bool:
        """A frame ended (``delivered``: with a result). True when its result should be shown."""
        now = self.clock() if now is None else now
        entry = self._jobs.pop(job, None)
        if entry is None:
            return False
        if job == self._newest:
            self._newest = None
        if not delivered:
            self.dropped_count += 1
            return False
        duration = now - entry.sent_at
        self.frame_s = duration if self.frame_s is None else 0.7 * self.frame_s + 0.3 * duration
        if entry.seq <= self._shown_seq:
            return False  # an older frame than the one on show
        self._shown_seq = entry.seq
        self.shown_count += 1
        self.latencies = [*self.latencies[-49:], now - entry.change_at]
        self.shown_at = [*self.shown_at[-49:], now]
        return True

    def lost(self) -> None:
        """The connection went away: nothing is in flight, and the current state goes out again."""
        self._jobs.clear()
        self._newest, self._sent_key = None, None
        self._changed_at = self._changed_at or self.clock()

    # -- numbers for the status line -------------------------------------------------------------
    def fps(self, now: float | None = None, window: float = 3.0) -> float:
        """Frames shown per second over the recent ``window`` seconds (0 when fewer than two)."""
        now = self.clock() if now is None else now
        recent = [t for t in self.shown_at if now - t <= window]
        if len(recent) < 2 or recent[-1] <= recent[0]:
            return 0.0
        return (len(recent) - 1) / (recent[-1] - recent[0])

    def status_text(self, now: float | None = None) -> str:
        now = self.clock() if now is None else now
        state = "up to date" if self.up_to_date else "updating"
        parts = [f"Live: {state}", f"{self.shown_count} frame{'s' if self.shown_count != 1 else ''}",
                 f"seed {self.seed}"]
        fps = self.fps(now)
        if fps:
            parts.append(f"{fps:.1f}/s")
        if self.latencies:
            parts.append(f"{1000 * self.latencies[-1]:.0f} ms")
        return " · ".join(parts)


class LiveConnection:
    """One long-lived connection for live frames: ``submit`` from any thread, newest wins.

    A sender thread connects on first use (and again after the connection drops) and sends the
    newest submitted request; a reader thread turns server messages into
    ``on_event(kind, job, payload)`` calls, on that thread:

    - ``("result", job, Result)``; ``("cancelled", job, reason)`` (``"replaced"`` for live work);
    - ``("error", job, message)`` for a job the server refused;
    - ``("lost", None, message)`` when the connection could not be made or went away.
    """

    def __init__(self, url: str, on_event: Callable[[str, str | None, object], None], *,
                 image_format: str = "rgba", client_name: str = "easel-live", token: str | None = None,
                 timeout: float = 5.0):
        self.url, self.on_event = url, on_event
        self._make = lambda: Client(url, timeout=timeout, image_format=image_format, client_name=client_name,
                                    token=token)
        self._client: Client | None = None
        self._wake = threading.Condition()
        self._next: PlannedRequest | None = None
        self._cancels: list[str] = []
        self._closing = False
        self._sender = threading.Thread(target=self._send_loop, daemon=True, name="easel-live-send")
        self._sender.start()

    def submit(self, planned: PlannedRequest) -> None:
        """Send ``planned`` soon; a request still waiting to be sent is replaced by it."""
        with self._wake:
            self._next = planned
            self._wake.notify()

    def cancel(self, job: str) -> None:
        with self._wake:
            self._cancels.append(job)
            self._wake.notify()

    def close(self, timeout: float = 3.0) -> None:
        """Send the cancels asked for, close the connection (the server drops queued work), end the threads."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._sender.join(timeout)

    def _send_loop(self) -> None:
        while True:
            with self._wake:
                while not (self._closing or self._next is not None or self._cancels):
                    self._wake.wait()
                planned, self._next = (None if self._closing else self._next), None
                cancels, self._cancels = self._cancels, []
                closing = self._closing
            client = self._client
            try:
                if client is None and planned is not None:
                    client = self._connect()
                if client is not None:
                    for job in cancels:
                        client.cancel(job)
                    if planned is not None:
                        client.submit(planned.request, planned.image, planned.mask)
            except ClientError as exc:
                self._drop(client, str(exc))
            except Exception as exc:  # noqa: BLE001 - reported, never a dead thread
                self._drop(client, f"unexpected error: {exc!r}")
            if closing:
                break
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _connect(self) -> Client:
        client = self._make()
        client.connect()
        self._client = client
        threading.Thread(target=self._read_loop, args=(client,), daemon=True, name="easel-live-read").start()
        return client

    def _drop(self, client: Client | None, message: str) -> None:
        if client is not None and client is self._client:
            self._client = None
            client.close()
        if not self._closing:
            self.on_event("lost", None, message)

    def _read_loop(self, client: Client) -> None:
        from .client import result_from_event

        message = "the server closed the connection"
        try:
            for event in client.events():
                if event.type == "result":
                    self.on_event("result", event.job, result_from_event(event))
                elif event.type == "cancelled":
                    self.on_event("cancelled", event.job, event.data.get("reason", "cancelled"))
                elif event.type == "error":
                    self.on_event("error", event.job, event.data.get("message", "unknown error"))
        except ClientError as exc:
            message = str(exc)
        except Exception as exc:  # noqa: BLE001
            message = f"unexpected error: {exc!r}"
        if client is self._client:
            self._drop(client, message)


# ----------------------------------------------------------------------------- power features
# (appended for issue #8, docs/features.md; editor-independent: LoRA text, sketch guide, variations,
# refiner, tiled upscale, history and re-apply. First used by the GIMP plug-in.)

def parse_loras(text: str) -> list[dict] | None:
    """LoRAs typed as ``"ink.safetensors:0.8, styles/soft:0.5"`` (commas or new lines; a name
    without ``:weight`` gets 1.0) -> ``[{"name", "weight"}]``, or None when blank.
    ValueError in plain words for a weight that is no number or outside -4..4, or too many."""
    from .protocol import MAX_LORAS

    out = []
    for part in text.replace("\n", ",").split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, weight = part.rpartition(":")
        if not sep:
            name, weight = part, "1"
        try:
            value = float(weight)
        except ValueError:
            raise ValueError(f"LoRA {part!r}: write it as name:weight, the weight a number (e.g. ink:0.8)") from None
        if not name.strip() or not -4.0 <= value <= 4.0 or value != value:
            raise ValueError(f"LoRA {part!r}: needs a name and a weight between -4 and 4")
        out.append({"name": name.strip(), "weight": value})
    if len(out) > MAX_LORAS:
        raise ValueError(f"at most {MAX_LORAS} LoRAs per job (got {len(out)})")
    return out or None


def loras_text(loras: list | None) -> str:
    """The inverse of ``parse_loras``: ``"ink.safetensors:0.8, soft.safetensors:1"``."""
    return ", ".join(f"{x['name']}:{float(x.get('weight', 1.0)):g}" for x in loras or [])


def add_lora(text: str, name: str, weight: float = 1.0) -> str:
    """``text`` with LoRA ``name`` appended (a picker's action); unchanged when it is already listed."""
    try:
        current = parse_loras(text) or []
    except ValueError:
        current = []
    if any(x["name"] == name for x in current):
        return text
    return ", ".join(p for p in (text.strip().rstrip(","), f"{name}:{weight:g}") if p)


def match_loras(loras: list | None, available: list[str] | None) -> list | None:
    """Let painters leave out ``.safetensors``: a name the server does not list but whose
    ``name.safetensors`` it does list is completed. Unknown names stay (the server names them)."""
    if not loras or not available:
        return loras
    offered = set(available)
    return [dict(x, name=f"{x['name']}.safetensors") if x["name"] not in offered
            and f"{x['name']}.safetensors" in offered else x for x in loras]


@dataclass
class Features:
    """The power features a painter set (docs/features.md); the defaults change nothing."""

    loras: list | None = None
    control_model: str | None = None  # with a control image (``sketch_guide``)
    control_strength: float = 1.0
    variation_seed: int | None = None
    variation_strength: float = 0.0
    refiner: bool = False
    refiner_switch: float = 0.8


def features_from_ui(loras: str = "", variation_seed: int = -1, variation_strength: float = 0.0,
                     control_model: str = "", control_strength: float = 1.0, refiner: bool = False,
                     refiner_switch: float = 0.8, available_loras: list[str] | None = None) -> Features:
    """Features from editor widgets, whose 'off' values are an empty text, a negative variation
    seed and an empty control model. ValueError (plain words) for unreadable LoRA text."""
    return Features(loras=match_loras(parse_loras(loras or ""), available_loras),
                    control_model=(control_model or "").strip() or None, control_strength=float(control_strength),
                    variation_seed=int(variation_seed) if variation_seed is not None and variation_seed >= 0 else None,
                    variation_strength=float(variation_strength), refiner=bool(refiner),
                    refiner_switch=float(refiner_switch))


@dataclass
class FeaturePlan(PlannedRequest):
    """A ``PlannedRequest`` that may carry the ControlNet guide (attachment ``control``)."""

    control: Image | None = None


def apply_features(planned: PlannedRequest, features: Features, control: Image | None = None) -> FeaturePlan:
    """Set the request's feature fields. With a control model, ``control`` (see ``sketch_guide``)
    must cover exactly what ``image`` covers (text to image: the requested width x height)."""
    r = planned.request
    r.loras, r.control_model, r.control_strength = features.loras, features.control_model, features.control_strength
    r.variation_seed, r.variation_strength = features.variation_seed, features.variation_strength
    r.refiner, r.refiner_switch = features.refiner, features.refiner_switch
    base = {name: getattr(planned, name) for name in PlannedRequest.__dataclass_fields__}
    return FeaturePlan(**base, control=control if features.control_model else None)


_INVERT = bytes(range(255, -1, -1))


def is_dark_on_light(rgba: bytes, samples: int = 4096) -> bool:
    """Whether a sketch is drawn dark on a light ground: the mean luma of up to ``samples``
    evenly spread pixels, transparent ones counted as white paper, is above the middle."""
    count = len(rgba) // 4
    if not count:
        return False
    step = max(1, count // samples)
    total = n = 0
    for i in range(0, count * 4, step * 4):
        r, g, b, a = rgba[i : i + 4]
        luma = (299 * r + 587 * g + 114 * b) // 1000
        total += (luma * a + 255 * (255 - a)) // 255
        n += 1
    return total / n > 127.5


def sketch_guide(rgba: bytes, invert: bool | None = None) -> tuple[bytes, bool]:
    """A canvas as a ControlNet guide: white lines on black (what scribble / line-art / canny
    ControlNets expect). ``invert`` None decides by ``is_dark_on_light``. Returns the RGBA and
    whether it was inverted. Inverting keeps alpha: the server lays the guide over black, which
    for an inverted sketch is the same as flattening it on white paper and then inverting."""
    if invert is None:
        invert = is_dark_on_light(rgba)
    if not invert:
        return bytes(rgba), False
    out = bytearray(rgba)
    for channel in range(3):
        out[channel::4] = rgba[channel::4].translate(_INVERT)
    return bytes(out), True


def plan_upscale(rgba: bytes, width: int, height: int, params: Params, factor: int,
                 x: int = 0, y: int = 0) -> PlannedRequest:
    """A tiled-upscale request (docs/features.md) for ``rgba`` (``width`` x ``height``, at x, y in the
    document). ``params.strength`` is the refine strength: 0 = plain Lanczos; a slider at 1.0 asks for
    0.99 (the protocol's own 1.0 would mean its default, 0.35)."""
    request = GenerateRequest(job=new_job_id(), prompt=params.prompt, negative_prompt=params.negative_prompt,
                              model=params.model, steps=params.steps, guidance=params.guidance, seed=params.seed,
                              batch=params.batch, scheduler=params.scheduler, strength=min(params.strength, 0.99),
                              x=x, y=y, upscale=factor)
    return PlannedRequest(IMG2IMG, request, Image.rgba(width, height, rgba))


def feature_choices(welcome: dict | None) -> dict:
    """What a plugin's dialog offers from a server's ``welcome``: models (ids, default), LoRAs,
    control models, whether a refiner is configured. Empty lists: hide that control."""
    welcome = welcome or {}
    models, default = model_choices(welcome)
    return {"models": models, "default_model": default, "loras": list(welcome.get("loras") or []),
            "control_models": list(welcome.get("control_models") or []),
            "refiner": bool(welcome.get("refiner")), "sdxl": [m["id"] for m in welcome.get("models", [])
                                                              if isinstance(m, dict) and m.get("family") == "sdxl"]}


def result_record(result: Result, index: int = 0) -> dict:
    """What a result layer keeps about its origin (e.g. as a GIMP parasite / Krita annotation):
    the job id (for ``fetch``), its seed and the parameters the server used."""
    return {"job": result.job, "seed": result.images[index].seed if result.images else None,
            "parameters": result.parameters}


# -- history: the server's stored results (protocol ``history`` / ``fetch``) -------------------
def fetch_history(client: Client, limit: int = 30) -> list[dict]:
    """Recent stored results, newest first (``job``, ``created``, ``parameters``, ``images``)."""
    client.send({"type": "history", "limit": int(limit)})
    for event in client.events():
        if event.type == "history":
            return list(event.data.get("jobs", []))
        if event.type == "error" and event.job is None:
            raise ClientError(event.data.get("message", "the server refused the history request"))
    raise ClientError("connection closed before the history arrived")


def fetch_result(client: Client, job: str, on_progress: Callable[[ProgressInfo], None] | None = None) -> Result:
    """A stored result by job id (a running job's result is awaited). JobFailed when unknown."""
    from .client import progress_from_event, result_from_event

    client.send({"type": "fetch", "job": job})
    for event in client.events():
        if event.job != job and not (event.type == "error" and event.job is None):
            continue
        if event.type == "result":
            return result_from_event(event)
        if event.type == "error":
            d = event.data
            raise JobFailed(d.get("code", "error"), d.get("message", "unknown error"), d.get("field"), job)
        if event.type == "cancelled":
            raise JobCancelled(job)
        if event.type == "progress" and on_progress:
            on_progress(progress_from_event(event))
    raise ClientError("connection closed before the result arrived")


def history_label(entry: dict) -> str:
    """One line for a history list: time, mode, prompt, seed, size, image count."""
    import time

    p = entry.get("parameters", {})
    images = entry.get("images", [])
    when = time.strftime("%m-%d %H:%M", time.localtime(entry.get("created", 0)))
    prompt = " ".join(str(p.get("prompt", "")).split()) or "(no prompt)"
    prompt = prompt if len(prompt) <= 40 else prompt[:39] + "…"
    seeds = p.get("seeds") or [i.get("seed") for i in images]
    size = f"{images[0]['width']}×{images[0]['height']}" if images and "width" in images[0] else ""
    mode = p.get("mode", "") + (f" ×{p['upscale']}" if p.get("upscale") else "")
    parts = [when, mode, prompt, f"seed {seeds[0]}" if seeds else "", size,
             f"{len(images)} images" if len(images) > 1 else ""]
    return " · ".join(x for x in parts if x)


def params_from_history(entry: dict) -> tuple[Params, Features]:
    """A history entry's (or result's) parameters as UI values, to run the same job again."""
    from .protocol import SCHEDULERS

    p = entry.get("parameters", {})
    seeds = p.get("seeds") or [-1]
    params = Params(prompt=p.get("prompt", ""), negative_prompt=p.get("negative_prompt", ""),
                    strength=float(p.get("strength", 1.0)), steps=p.get("steps"), guidance=p.get("guidance"),
                    seed=int(seeds[0]), batch=len(seeds), model=p.get("model"),
                    scheduler=p.get("scheduler") if p.get("scheduler") in SCHEDULERS else None)
    features = Features(loras=p.get("loras") or None, control_model=p.get("control_model"),
                        control_strength=float(p.get("control_strength", 1.0)),
                        variation_seed=p.get("variation_seed"),
                        variation_strength=float(p.get("variation_strength", 0.0)),
                        refiner=bool(p.get("refiner")), refiner_switch=float(p.get("refiner_switch", 0.8)))
    return params, features


class ClientTask(threading.Thread):
    """Runs ``work(client)`` on a worker thread over one connection: a generate with a control
    image (``generate_work``), ``fetch_history``, ``fetch_result``… Like ``GenerationTask``,
    ``on_done(value, error)`` is called exactly once, error "cancelled" when cancelled."""

    def __init__(self, url: str, work: Callable[[Client], object], *, job: str | None = None,
                 on_done: Callable[[object, str | None], None] | None = None, image_format: str = "rgba",
                 client_name: str = "easel-plugin", token: str | None = None, timeout: float = 10.0):
        super().__init__(daemon=True, name=f"easel-{job or 'task'}")
        self.work, self.job, self.on_done = work, job, on_done
        self._client = Client(url, timeout=timeout, image_format=image_format, client_name=client_name, token=token)
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()
        if self.job:
            try:
                self._client.cancel(self.job)
            except ClientError:
                pass

    def run(self) -> None:
        value, error = None, None
        try:
            with self._client as client:
                if self._cancel.is_set():
                    raise JobCancelled(self.job)
                value = self.work(client)
        except JobCancelled:
            error = "cancelled"
        except JobFailed as exc:
            error = f"{exc} (field: {exc.field})" if exc.field else str(exc)
        except ClientError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a plugin must never die with a traceback
            error = f"unexpected error: {exc!r}"
        if self.on_done:
            self.on_done(value, error)


def generate_work(planned: PlannedRequest, on_progress: Callable[[ProgressInfo], None] | None = None):
    """``ClientTask`` work that sends ``planned`` (with its ``control`` guide, if any) and waits."""
    return lambda client: client.generate(planned.request, planned.image, planned.mask, on_progress,
                                          control=getattr(planned, "control", None))
