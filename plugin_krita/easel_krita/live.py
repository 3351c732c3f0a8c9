"""Live painting: while the docker's Live toggle is on, the canvas regenerates as you paint.

Krita has no change events for Python, so a QTimer polls: it reads the region a frame would
send (the whole canvas, or a selection's context region) without the live layer and the control
layers, and the enabled control layers over the same pixels (sent as ``controls``, as Generate
sends them), hashes them with the parameters, and ``editing.LiveSession`` decides when a frame goes out. Frames travel
through one long-lived ``editing.LiveConnection`` (worker threads, ``replace: true``); its
events come back to the GUI thread as a Qt signal, where the newest result is written into the
one ``Easel Live`` layer (``live_layer``). Turning Live off removes that layer; Apply copies
the frame on show into a normal new layer first.
"""

from __future__ import annotations

import time

from krita import Krita

from . import controller as ctl
from . import document, live_layer
from .qt import QObject, Qt, QTimer, Signal
from .shared import editing

RETRY_S = 2.0  # after a lost connection, the next try waits this long


class LiveController(QObject):
    """The live session of this Krita process (one at a time, bound to one document)."""

    changed = Signal()  # the live widgets (toggle, Apply, status line) should be refreshed
    _event = Signal(str, object, object)  # kind, job, payload: from the connection's reader thread

    def __init__(self, main: ctl.Controller, config: editing.LiveConfig | None = None):
        super().__init__(main)
        self.main = main
        self.config = config or editing.LiveConfig()
        self.session: editing.LiveSession | None = None
        self.connection: editing.LiveConnection | None = None
        self.doc_key: str | None = None
        self.status, self.status_is_error = "", False
        self.shown = None  # (ResultImage, Params) of the frame in the live layer
        self._rect = None  # where that frame sits
        self._frames: dict[str, editing.Params] = {}  # job -> the parameters it was sent with
        self._retry_at = 0.0
        self._read_s = 0.0  # running estimate of one poll's cost
        self._error: str | None = None  # shown instead of the numbers until the next frame (or fix)
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.poll)
        self._event.connect(self._on_event, Qt.ConnectionType.QueuedConnection)

    @property
    def active(self) -> bool:
        return self.session is not None

    def _say(self, text: str, error: bool = False) -> None:
        self.status, self.status_is_error = text, error
        self.changed.emit()

    def _from_worker(self, kind: str, job, payload) -> None:
        """Reader/sender thread: hand the event to the GUI thread (nothing once Krita is closing)."""
        if self.main.closing:
            return
        try:
            self._event.emit(kind, job, payload)
        except RuntimeError:  # the C++ side is gone
            pass

    # -- on / off ------------------------------------------------------------------------------
    def start(self) -> bool:
        """Turn Live on for the active document; False (and a message) when it cannot be."""
        if self.active:
            return True
        doc = Krita.instance().activeDocument()
        try:
            live_layer.check_live_document(doc)
        except document.DocumentError as exc:
            self._say(str(exc), error=True)
            return False
        params = self.main.current_params(remember=False)
        self.session = editing.LiveSession(params.seed, self.config)
        self.connection = editing.LiveConnection(self.main.url, self._from_worker, image_format="rgba",
                                                 client_name=f"{ctl.CLIENT_NAME}-live", token=self.main.token)
        self.doc_key = document.document_key(doc)
        self.shown, self._rect, self._frames, self._retry_at, self._error = None, None, {}, 0.0, None
        self._say(f"Live: on (seed {self.session.seed}) …")
        self.timer.start(int(1000 * self.config.poll_s))
        self.poll()
        return True

    def stop(self, message: str = "Live: off.", error: bool = False, remove_layer: bool = True) -> None:
        """Turn Live off: stop the running frame on the server, close the connection, remove the layer."""
        self.timer.stop()
        session, self.session = self.session, None
        connection, self.connection = self.connection, None
        if connection is not None:
            if session is not None and session.in_flight:
                connection.cancel(session.in_flight)
            connection.close(timeout=0.0)  # the sender ends on its own; the GUI never waits for it
        doc = document.find_document(self.doc_key) if self.doc_key and remove_layer else None
        if doc is not None:
            live_layer.remove(doc)
        self.shown, self._rect = None, None
        if not self.main.closing:
            self._say(message, error)

    def toggle(self, on: bool) -> None:
        if on:
            self.start()
        else:
            self.stop()

    def shutdown(self) -> None:
        """Krita is closing: end the session, leave the document alone (no save prompt from us)."""
        self.stop(remove_layer=False)

    # -- polling -----------------------------------------------------------------------------------
    def poll(self) -> None:
        """Compare the canvas and the parameters with what is on show; send a frame when due."""
        session = self.session
        if session is None:
            return
        doc = document.find_document(self.doc_key)
        if doc is None:
            self.stop("Live: off (its document was closed).")
            return
        t0 = time.perf_counter()
        params = self.main.current_params(remember=False)
        model = editing.find_model(self.main.welcome, params.model)
        live = editing.live_params(params, model, session.follow_seed(params.seed))
        try:
            state = live_layer.read_live_state(doc, live.strength)
            controls = live_layer.read_controls(doc, state)
            areas = live_layer.read_regions(doc, state)
        except (document.DocumentError, ValueError) as exc:  # ValueError: a control layer's settings
            self.stop(str(exc), error=True)
            return
        session.observe(*editing.frame_keys(state, live, controls, areas))
        self._pace(time.perf_counter() - t0)
        if session.due() and time.monotonic() >= self._retry_at:
            planned = editing.plan_live(state, live, model, controls, areas)
            problem = editing.check_request(planned)
            if problem:
                self._error = f"Live: {problem}"
                self._show_status(state, bool(controls[0]))
                return
            if self._error and self._error.startswith("Live: bad parameter"):
                self._error = None
            self._frames[planned.request.job] = live
            session.sent(planned.request.job)
            self.connection.submit(planned)
        self._show_status(state, bool(controls[0]))

    def _pace(self, seconds: float) -> None:
        """Poll less often when reading the canvas is costly (big canvases): at most ~20% of the time."""
        self._read_s = seconds if not self._read_s else 0.8 * self._read_s + 0.2 * seconds
        interval = int(1000 * max(self.config.poll_s, 5 * self._read_s))
        if abs(interval - self.timer.interval()) > 20:
            self.timer.setInterval(interval)

    def _show_status(self, state: editing.EditorState, steered: bool = False) -> None:
        text = self._error or self.session.status_text()
        if state.rgba is None and not steered and not self._error:
            text += " · strength is 100%: strokes do not change the picture; lower it to paint live"
        if (text, bool(self._error)) != (self.status, self.status_is_error):
            self._say(text, bool(self._error))

    # -- results -----------------------------------------------------------------------------------
    def _on_event(self, kind: str, job, payload) -> None:
        session = self.session
        if session is None:
            return
        if kind == "lost":
            session.lost()
            self._frames.clear()
            self._retry_at = time.monotonic() + RETRY_S
            self._error = f"Live: {payload} (trying again in {RETRY_S:.0f} s)"
            self._say(self._error, error=True)
            return
        live = self._frames.pop(job, None)
        shown = session.finished(job, kind == "result")
        if kind == "error":
            self._error = f"Live: the server refused a frame: {payload}"
            self._say(self._error, error=True)
        elif shown and payload.images:
            self._show(payload.images[0], live)
        self.poll()  # a frame ended: the newest state may go out at once

    def _show(self, result, live: editing.Params | None) -> None:
        doc = document.find_document(self.doc_key)
        if doc is None:
            return
        try:
            live_layer.show(doc, result.image, result.x, result.y, self._rect)
        except Exception as exc:  # the docker says it, Krita carries on
            self._error = f"Live: could not update the live layer: {exc}"
            self._say(self._error, error=True)
            return
        self._rect = (result.x, result.y, result.image.width, result.image.height)
        self.shown, self._error = (result, live), None
        if self.main.last_seed != result.seed:
            self.main.last_seed = result.seed
            self.main.changed.emit()

    def apply(self) -> None:
        """Copy the frame on show into a normal new layer (named like Generate's results)."""
        if self.shown is None:
            self.main.set_status("Nothing to apply yet: turn Live on and wait for a frame.", error=True)
            return
        doc = document.find_document(self.doc_key)
        if doc is None:
            self.main.set_status("The live document was closed.", error=True)
            return
        result, live = self.shown
        name = editing.layer_name(live.prompt if live else "", result.seed)
        try:
            live_layer.apply(doc, name, result.image, result.x, result.y)
        except document.DocumentError as exc:
            self.main.set_status(str(exc), error=True)
            return
        self.main.set_status(f"Applied the live frame as layer “{name}”.")


_instance: LiveController | None = None


def instance() -> LiveController:
    global _instance
    if _instance is None:
        _instance = LiveController(ctl.instance())
    return _instance
