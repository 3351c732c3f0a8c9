"""Live painting: when to send a new frame, with a fixed seed, over one long-lived connection.

A frame carries the enabled control layers as ``controls``, read as Generate reads them
(``control_items`` over ``EditorState.box``); their pixels and settings are part of what
``frame_keys`` compares, so a stroke on a control layer sends a frame too. Region layers likewise
(``region_items``): their masks are hashed with the pixels, their prompts with the parameters.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..connection import Client, ClientError
from ..protocol import Control, Image, Region
from .core import Box, EditorState, Params, PlannedRequest, plan_request
from .power import fit_attachments, fit_to_model
from .ui import model_choices

LIVE_STEPS = 4  #: live steps for models without a few-step default (turbo/LCM models use their own)


LIVE_MAX_STEPS = 8  #: a Steps field of 1..8 is used as it is while live; higher or "default": the live default


LIVE_LAYER_NAME = "Easel Live"

#: a frame's control layers: the request's ``controls`` and the attachments they name (``control_items``)
FrameControls = tuple[Sequence[Control], dict[str, Image]]
NO_CONTROLS: FrameControls = ((), {})
#: a frame's region layers: the request's ``regions`` and their masks (``region_items``)
FrameRegions = tuple[Sequence[Region], dict[str, Image]]
NO_REGIONS: FrameRegions = ((), {})


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


def edit_models(welcome: dict | None) -> list[str]:
    """The instruction-edit models of a welcome (FLUX.1 Kontext & co.): those whose features list ``edit``."""
    return [m["id"] for m in (welcome or {}).get("models", []) if isinstance(m, dict) and "edit" in (m.get("features") or [])]


def is_edit_model(welcome: dict | None, model_id: str | None) -> bool:
    """Whether ``model_id`` (empty or None: the server's default) is an instruction-edit model: the editors then
    send the canvas (or the selection) as the picture to edit, the prompt as the instruction."""
    return "edit" in ((find_model(welcome, model_id or None) or {}).get("features") or [])


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


def params_key(params: Params, region: Box | None = None, controls: Sequence[Control] = ()) -> str:
    """What, besides the pixels, makes a live frame differ: the parameters, the region read and the
    control layers' settings."""
    return repr((params.prompt, params.negative_prompt, round(params.strength, 4), params.steps, params.guidance,
                 params.model, params.scheduler, params.seed, region,
                 [(c.kind, c.strength, c.start, c.end) for c in controls]))


def frame_keys(state: EditorState, params: Params, controls: FrameControls = NO_CONTROLS,
               regions: FrameRegions = NO_REGIONS) -> tuple[str, str]:
    """The two keys ``LiveSession.observe`` compares: the pixels a frame sends (region, selection, the control
    layers' images, the region layers' masks) and ``params_key`` with the region layers' prompts."""
    items, images = controls
    areas, masks = regions
    canvas = fingerprint(state.rgba, state.selection, *(images[c.image].data for c in items),
                         *(masks[r.mask].data for r in areas))
    return canvas, params_key(params, state.region, items) + repr([(r.prompt, r.negative_prompt) for r in areas])


def plan_live(state: EditorState, params: Params, model: dict | None = None,
              controls: FrameControls = NO_CONTROLS, regions: FrameRegions = NO_REGIONS) -> PlannedRequest:
    """``plan_request`` for a live frame, with its control layers (``controls``): replaces this client's
    older live work, no step previews, and the faster size (docs/krita.md): one pass (no second pass); a
    frame smaller than the native area of ``model`` (its ``welcome.models`` entry) runs at its own size
    (``exact_size``), a bigger one at the native area, as the server does by default."""
    planned = plan_request(state, params)
    planned.request.controls = list(controls[0]) or None
    planned.request.regions = list(regions[0]) or None
    planned.attachments = {**controls[1], **regions[1]}
    planned.request.replace = True
    planned.request.preview = False
    planned.request.hires = "off"
    native = (model or {}).get("native")
    image = planned.image
    width, height = (image.width, image.height) if image is not None else (state.width, state.height)
    planned.request.exact_size = bool(native) and width * height < native[0] * native[1]
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
                        # what the model cannot use (a negative prompt on FLUX.1, ...) is left out
                        request = fit_to_model(planned.request, client.welcome)
                        client.submit(request, planned.image, planned.mask,
                                      attachments=fit_attachments(request, planned.attachments))
            except ClientError as exc:
                self._drop(client, str(exc))
            except Exception as exc:  # reported, never a dead thread
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
        from ..connection import result_from_event

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
        except Exception as exc:
            message = f"unexpected error: {exc!r}"
        if client is self._client:
            self._drop(client, message)
