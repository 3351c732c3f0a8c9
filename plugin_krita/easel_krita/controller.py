"""The plugin's state and work, shared by every window's docker and by the actions.

Network calls run on worker threads (``editing.ClientTask`` and a connection probe);
their callbacks only emit Qt signals, which Qt delivers on the GUI thread, where Krita's
document API may be used.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from dataclasses import dataclass

from krita import Krita

from . import control_layers, document, local_server, regions_panel
from .krita_settings import load_params, read_setting, save_params, write_setting
from .qt import QImage, QObject, Qt, Signal
from .shared import editing
from .shared.connection import DEFAULT_URL, Client, ClientError, ResultImage

# An edit sends the canvas (or the selection with its context) at any strength: below 1 so that it is sent;
# edit models take it as context and leave the strength unused.
EDIT_STRENGTH = 0.5
HISTORY_SIZE = 16
CLIENT_NAME = "easel-krita"


@dataclass
class Job:
    """A generation in flight: where its results go and what it asked for."""

    doc_key: str
    planned: editing.PlannedRequest | None  # None: a stored result fetched from the server's history
    params: editing.Params
    target: str = "layers"  # or "new_document" (Upscale)
    job_id: str = ""
    placement: tuple | None = None  # (parent, above) when Generate was pressed: results go there

    def __post_init__(self):
        self.job_id = self.job_id or self.planned.request.job


@dataclass
class HistoryItem:
    """One image of this session, kept so it can be applied again."""

    name: str
    result: ResultImage
    thumbnail: QImage


class Controller(QObject):
    """State of the plugin. Dockers show it and feed it parameters; actions call generate/cancel."""

    changed = Signal()  # anything the dockers show changed
    progress_changed = Signal()  # only the progress bar and the preview changed
    history_added = Signal(object)  # a HistoryItem
    _progress = Signal()  # from the worker thread: a progress event is waiting in _pending
    _done = Signal(object, object, object)  # job, result, error
    _probed = Signal(str, object, object)  # url, welcome, error
    history_listed = Signal(object)  # the server's history entries (power.PowerPanel shows them)
    _listed = Signal(object, object)  # from the worker thread: entries, error

    def __init__(self, parent=None):
        super().__init__(parent)
        self.url = editing.resolve_url(None, dict(os.environ), read_setting("url", DEFAULT_URL))
        self.token = os.environ.get("EASEL_TOKEN") or None
        self.welcome: dict | None = None
        self.connection = "not connected"
        self.connection_ok = False
        self.task: editing.ClientTask | None = None
        self.job: Job | None = None
        self.status, self.status_is_error = "", False
        self.percent, self.progress_text = 0, ""
        self.preview: QImage | None = None
        self.last_seed: int | None = None
        self.history: list[HistoryItem] = []
        self.dockers: list = []  # every window's docker; the active window's one gives the parameters
        self.server = local_server.KritaServer(CLIENT_NAME)  # starts a local server when none answers
        self.closing = False
        self._pending = None  # the newest progress event not shown yet (older ones are dropped)
        self._pending_lock = threading.Lock()
        self._progress.connect(self._on_progress, Qt.ConnectionType.QueuedConnection)
        self._done.connect(self._on_done, Qt.ConnectionType.QueuedConnection)
        self._probed.connect(self._on_probed, Qt.ConnectionType.QueuedConnection)
        self._listed.connect(self._on_listed, Qt.ConnectionType.QueuedConnection)

    # -- state -------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self.task is not None

    def model_ids(self) -> tuple[list[str], str | None]:
        return editing.model_choices(self.welcome or {})

    def set_status(self, text: str, error: bool = False) -> None:
        self.status, self.status_is_error = text, error
        self.changed.emit()

    def _emit(self, signal_name: str, *args, owner: QObject | None = None) -> None:
        """Emit ``owner``'s (default: this one's) signal from a worker thread; nothing once Krita is closing."""
        if self.closing:
            return
        try:
            getattr(owner or self, signal_name).emit(*args)
        except RuntimeError:  # the C++ side is gone (Krita is shutting down)
            pass

    # -- connection --------------------------------------------------------------------------
    def connect_server(self, url: str | None = None, start: bool = False) -> None:
        """Check the server at ``url`` (default: the current one) and fetch its models, off the GUI thread;
        ``start`` (the Connect button): start the local server first when none answers."""
        url = editing.resolve_url(url or self.url)
        if url != self.url:
            self.url = url
            write_setting("url", url)
        self.connection, self.connection_ok = f"connecting to {url} …", False
        self.changed.emit()
        settings = local_server.load_settings()
        hooks = self.server.hooks(url, self.token) if start else None
        can_start = bool(settings.autostart and settings.command and editing.local_port(url))
        threading.Thread(target=self._probe, args=(url, hooks, can_start), daemon=True, name="easel-probe").start()

    def _probe(self, url: str, hooks: dict | None = None, can_start: bool = False) -> None:
        try:
            if hooks is not None:
                hooks["prepare"](threading.Event())
            with Client(url, timeout=5.0, image_format="rgba", token=self.token, client_name=CLIENT_NAME) as client:
                welcome = client.welcome
            self._emit("_probed", url, welcome, None)
        except ClientError as exc:
            idle = can_start and hooks is None and isinstance(exc.__cause__, ConnectionRefusedError)
            self._emit("_probed", url, None, f"no server runs at {url} yet: Generate (or Connect) starts one"
                       if idle else hooks["explain"](exc) if hooks else str(exc))
        except Exception as exc:  # shown in the docker, never a traceback
            self._emit("_probed", url, None, f"cannot connect to {url}: {exc}")

    def _on_probed(self, url: str, welcome, error) -> None:
        if url != self.url:
            return  # an older probe
        self.welcome = welcome
        if welcome is not None:
            ids, _ = editing.model_choices(welcome)
            device = welcome.get("device", "")
            self.connection = f"connected: {len(ids)} model{'s' if len(ids) != 1 else ''}" + (f" on {device}" if device else "")
            self.connection_ok = True
        else:
            self.connection, self.connection_ok = f"not connected: {error}", False
        self.changed.emit()

    # -- generate / cancel -------------------------------------------------------------------
    def add_docker(self, docker) -> None:
        self.dockers.append(docker)
        docker.destroyed.connect(lambda *_: self.dockers.remove(docker) if docker in self.dockers else None)

    def current_params(self, remember: bool = True) -> editing.Params:
        """The parameters in the active window's docker (another docker's, or the saved ones, as fallbacks).

        ``remember=False`` (live polling) reads without saving anything to Krita's settings."""
        docker = self.current_docker()
        return docker.params(remember) if docker is not None else load_params()

    def current_docker(self):
        """The active window's docker (another one as a fallback), or None."""
        window = Krita.instance().activeWindow()
        qwindow = window.qwindow() if window is not None else None
        ranked = []
        for docker in list(self.dockers):
            try:
                ranked.append((docker.window() is not qwindow, len(ranked), docker))
            except RuntimeError:  # deleted with its window
                self.dockers.remove(docker)
        for _, _, docker in sorted(ranked):
            return docker
        return None

    def generate(self, expand: list[int] | None = None) -> None:
        """What the Generate button and the ``easel_generate`` action do; ``expand`` (the Expand button): grow the
        canvas by these margins [left, top, right, bottom] and paint them."""
        if self.busy:
            self.set_status("A generation is already running: wait for it, or press Cancel.")
            return
        params = self.current_params()
        save_params(params)
        edit = editing.is_edit_model(self.welcome, params.model)
        if edit:  # the prompt is an instruction for the canvas or the selection
            params = dataclasses.replace(params, strength=min(params.strength, EDIT_STRENGTH))
        doc = Krita.instance().activeDocument()
        docker = self.current_docker()
        try:
            features = docker.power.features() if docker is not None else editing.Features()
            if expand is not None:
                features = dataclasses.replace(features, expand=editing.features_from_ui(expand=expand).expand)
                if not features.expand:
                    raise ValueError("Expand needs a margin: set left, top, right or bottom to a number of pixels.")
            planned = editing.build_request(document.KritaDocument(doc), params, features,
                                            controls=control_layers.present(doc), regions=regions_panel.present(doc))
        except editing.RequestProblem as exc:  # bad parameters, in plain words, before any network
            self.set_status(f"Cannot generate: {exc}", error=True)
            return
        except (document.DocumentError, ValueError) as exc:
            self.set_status(str(exc), error=True)
            return
        job = Job(document.document_key(doc), planned, params, placement=document.placement(doc))
        words = {editing.TXT2IMG: "Generating a new image", editing.IMG2IMG: "Refining the canvas",
                 editing.INPAINT: "Regenerating the selection"}[planned.mode]
        if edit:
            words = "Editing the selection" if planned.mode == editing.INPAINT else "Editing the canvas"
        if planned.request.inpaint_mode == editing.BACKGROUND:
            words = "Replacing the background"
        if planned.request.expand:
            words = "Expanding the canvas"
        self._run(job, editing.generate_work(planned, self._queue_progress), words)  # with any sketch guide

    def _run(self, job: Job, work, words: str, on_done=None) -> None:
        """Run ``work`` on a worker thread (``on_done(value, error)`` there; default: results as layers);
        the local server is started first when none answers."""
        task = editing.ClientTask(self.url, work, job=job.job_id if job.planned else None,
                                  on_done=on_done or (lambda value, error: self._emit("_done", job, value, error)),
                                  image_format="rgba", client_name=CLIENT_NAME, token=self.token,
                                  **self.server.hooks(self.url, self.token, job.job_id, self._queue_progress))
        self._start(job, task, words)

    def _start(self, job: Job, task, words: str) -> None:
        self.job, self.task = job, task
        self.percent, self.progress_text, self.preview = 0, "connecting", None
        self.set_status(f"{words} …")
        task.start()

    # -- power features: upscale, history (docs/features.md) ------------------------------------
    def upscale(self, factor: int = 2) -> None:
        """Upscale ×``factor`` of the visible canvas, refined at the docker's strength, into a NEW document."""
        if self.busy:
            self.set_status("A generation is already running: wait for it, or press Cancel.")
            return
        params = self.current_params()
        doc = Krita.instance().activeDocument()
        try:
            document.check_document(doc)
            w, h = doc.width(), doc.height()
            docker = self.current_docker()
            upscaler = docker.power.upscaler_id() if docker is not None else ""
            planned = editing.plan_upscale(document.read_canvas(doc, 0, 0, w, h), w, h, params, factor,
                                           upscaler=upscaler)
        except document.DocumentError as exc:
            self.set_status(str(exc), error=True)
            return
        job = Job(document.document_key(doc), planned, params, target="new_document")
        self._run(job, editing.generate_work(planned, self._queue_progress), f"Upscaling ×{factor}")

    def fetch_history(self) -> None:
        """Ask the server for its recent jobs; ``history_listed`` carries them to the docker."""
        self.set_status("Asking the server for its history …")
        editing.ClientTask(self.url, lambda client: editing.fetch_history(client, 30),
                           on_done=lambda value, error: self._emit("_listed", value, error), image_format="rgba",
                           client_name=CLIENT_NAME, token=self.token, **self.server.hooks(self.url, self.token)).start()

    def _on_listed(self, entries, error) -> None:
        if error:
            self.set_status(f"History failed: {error}", error=True)
            return
        self.set_status(f"{len(entries)} job{'s' if len(entries) != 1 else ''} in the server's history"
                        + (": double-click one to add it as a layer." if entries else "."))
        self.history_listed.emit(entries)

    def insert_history(self, entry: dict) -> None:
        """Fetch a stored job's images and add them as layers to the active document."""
        doc = Krita.instance().activeDocument()
        if self.busy or doc is None:
            self.set_status("Open a document (and wait for the running job) to add a history entry.", error=True)
            return
        params, _ = editing.params_from_history(entry)
        job = Job(document.document_key(doc), None, params, job_id=entry["job"])
        self._run(job, lambda client: editing.fetch_result(client, job.job_id, self._queue_progress),
                  "Fetching from the history")

    def cancel(self) -> None:
        """What the Cancel button and the ``easel_cancel`` action do."""
        if self.task is None:
            return
        if self.job is not None and self.job.planned is None:  # a history fetch: nothing to stop on the server
            self.task, self.job, self.percent, self.progress_text = None, None, 0, ""
            self.set_status("Cancelled.")
            return
        self.set_status("Cancelling …")
        threading.Thread(target=self.task.cancel, daemon=True, name="easel-cancel").start()

    def _queue_progress(self, info) -> None:
        """Worker thread: keep only the newest event, so a slow GUI never falls behind the server."""
        with self._pending_lock:
            waiting, self._pending = self._pending is not None, info
        if not waiting:
            self._emit("_progress")

    def _on_progress(self) -> None:
        with self._pending_lock:
            info, self._pending = self._pending, None
        if info is None or self.job is None or info.job != self.job.job_id:
            return
        self.percent, self.progress_text = editing.progress_text(info)
        if info.preview is not None:
            self.preview = document.to_qimage(info.preview)
        self.progress_changed.emit()

    def finish(self, job: Job, error: str | None, failed: str) -> bool:
        """A worker's end, on the GUI thread: True when ``job`` is the running one and succeeded (progress
        done); otherwise False, with the status shown for an error ("cancelled", or ``failed: error``)."""
        if job is not self.job:
            return False  # cancelled meanwhile
        self.task, self.job = None, None
        self.percent, self.progress_text = (0, "") if error else (100, "done")
        if error:
            self.set_status("Cancelled." if error == "cancelled" else f"{failed}: {error}", error=error != "cancelled")
        return not error

    def _on_done(self, job: Job, result, error) -> None:
        if not self.finish(job, error, "Generation failed"):
            return
        items = [HistoryItem(editing.layer_name(job.params.prompt, r.seed), r, document.thumbnail(r.image)) for r in result.images]
        for item in items:
            self.history.append(item)
            self.history_added.emit(item)
        del self.history[:-HISTORY_SIZE]
        if result.images:
            self.last_seed = result.images[0].seed
        if job.target == "new_document" and result.images:
            self._open_new(items[0])
            return
        doc = document.find_document(job.doc_key)
        if doc is None:
            self.set_status("The document was closed before the results came: they are in the strip below.")
            return
        if job.planned is not None and job.planned.request.expand:
            document.grow_for_expand(doc, job.planned.request.expand, result.images)
        self._insert(doc, items, job.placement)

    def _insert(self, doc, items: list[HistoryItem], placement: tuple | None = None) -> None:
        try:
            names = {id(item.result): item.name for item in items}
            document.insert_results(doc, [item.result for item in items], lambda r: names[id(r)], placement)
        except document.DocumentError as exc:
            self.set_status(str(exc), error=True)
            return
        seeds = ", ".join(str(item.result.seed) for item in items)
        plural = "s" if len(items) != 1 else ""
        self.set_status(f"Added {len(items)} layer{plural} (seed{plural} {seeds}).")

    def _open_new(self, item: HistoryItem) -> None:
        try:
            document.open_in_new_document(item.result.image, item.name)
        except document.DocumentError as exc:
            self.set_status(str(exc), error=True)
            return
        image = item.result.image
        self.set_status(f"Opened the upscaled image ({image.width}×{image.height}) as a new document.")

    def apply_again(self, item: HistoryItem) -> None:
        """Insert an earlier result into the active document, at the offset it came with."""
        doc = Krita.instance().activeDocument()
        if doc is None:
            self.set_status("Open a document to apply this result to.", error=True)
            return
        self._insert(doc, [item])

    # -- shutdown ----------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Krita is closing: stop the job (the server drops it), let the worker end, and stop the server
        Krita started (one the painter started keeps running)."""
        self.closing = True
        task, self.task, self.job = self.task, None, None
        if task is not None:
            task.cancel()
            task.join(3.0)
        self.server.stop()


_instance: Controller | None = None


def instance() -> Controller:
    """The one controller of this Krita process."""
    global _instance
    if _instance is None:
        _instance = Controller()
    return _instance
