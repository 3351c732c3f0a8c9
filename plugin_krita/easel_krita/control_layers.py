"""Control layers in the docker: layers that steer a generation (line art, depth …) instead of being painted.

The list is kept with the document (the annotation ``easel-controls``: ``editing`` controls' JSON text, saved
in the .kra) and refers to layers by their unique id. **Add** makes the active layer a control layer of the
chosen kind, strength and step range (none for the reference kinds: an IP-Adapter reads the layer, whole, for
the whole denoising); each row can be switched on and off or removed. **From image** (for
the kinds the server makes, ``MADE_KINDS``) asks the server (``preprocess``) for a guide of that kind made from the visible canvas (or the selection's
bounds), inserts it as a new layer above the active one and lists it. Generate (``controller.generate``)
passes ``present`` to ``editing.build_request``, which sends the enabled ones as ``controls`` and leaves
every control layer out of the canvas (``editing.fit_to_model`` drops them for a model that can use none);
live painting does the same for every frame (``live_layer.read_controls``, ``layer_ids``).
The panel shows only when the chosen model can use a control kind (the welcome's per-model ``controls``).
"""

from __future__ import annotations

from types import SimpleNamespace

from krita import Krita

from . import document
from .layer_list import ListRows, StoredLayers, node_of
from .qt import (
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPushButton,
    Qt,
    QVBoxLayout,
    QWidget,
    Signal,
    named,
)
from .shared import editing
from .shared.codes import PreprocessKind
from .shared.connection import new_job_id
from .shared.editing import controls
from .shared.fields import declared
from .shared.protocol import Control, Image

ANNOTATION = "easel-controls"
MADE_KINDS = tuple(str(k) for k in PreprocessKind)  # what the server's ``preprocess`` makes ("From image")


# -- the list, kept with the document -------------------------------------------------------------
LAYERS = StoredLayers(ANNOTATION, "Easel control layers", controls.from_text, controls.to_text)
stored, store, present = LAYERS.stored, LAYERS.store, LAYERS.present  # deleted layers are not present


def layer_ids(doc) -> set[str]:
    """The unique ids of every control layer of ``doc`` (live painting leaves them out of its canvas)."""
    return {c.layer for c in stored(doc)}


def _declared(box: QDoubleSpinBox, name: str) -> QDoubleSpinBox:
    spec = declared(Control)[name]
    box.setRange(spec.spec.low, spec.spec.high)
    box.setValue(spec.default)
    box.setSingleStep(0.05)
    return box


class ControlPanel(ListRows, QWidget):
    """Kind, strength, range, Add / From image / Remove and the active document's list of control layers."""

    _guide_done = Signal(object, object, object)  # from the worker thread: (job, where, kind…), value, error

    def __init__(self, controller, parent=None):
        super().__init__(parent)
        self.controller = controller
        self.layers = LAYERS
        self._shown: tuple = ()
        self._kinds: tuple = ()
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(QLabel("Control layers"))
        self.kind = named(QComboBox(), "easel_control_kind", "What the layer shows (the kinds this model can use)")
        self.strength = _declared(named(QDoubleSpinBox(), "easel_control_layer_strength",
                                        "How strongly the layer steers (0: not at all)"), "strength")
        self.start = _declared(named(QDoubleSpinBox(), "easel_control_start",
                                     "Where in the denoising it starts steering (0: from the first step)"), "start")
        self.end = _declared(named(QDoubleSpinBox(), "easel_control_end",
                                   "Where it stops steering (1: to the last step)"), "end")
        row = QHBoxLayout()
        for widget in (self.kind, self.strength, QLabel("from"), self.start, QLabel("to"), self.end):
            row.addWidget(widget)
        box.addLayout(row)
        self.add = named(QPushButton("Add"), "easel_control_add", "Make the active layer a control layer of this kind")
        self.from_image = named(QPushButton("From image"), "easel_control_from_image",
                                "Let the server make a guide of this kind from the visible canvas (or the "
                                "selection's bounds), added as a new control layer")
        self.remove = named(QPushButton("Remove"), "easel_control_remove",
                            "The chosen row is no longer a control layer (the layer itself stays)")
        row = QHBoxLayout()
        for widget in (self.add, self.from_image, self.remove):
            row.addWidget(widget)
        box.addLayout(row)
        self.list = named(QListWidget(), "easel_control_list",
                          "This document's control layers: tick to use, untick to leave out")
        self.list.setFixedHeight(80)
        box.addWidget(self.list)
        self.add.clicked.connect(self._add)
        self.remove.clicked.connect(self._remove)
        self.from_image.clicked.connect(self._from_image)
        self.list.itemChanged.connect(self._toggled)
        self.kind.currentTextChanged.connect(self._offer_from_image)
        self.kind.currentTextChanged.connect(self._offer_range)
        self._guide_done.connect(self._on_guide, Qt.ConnectionType.QueuedConnection)

    # -- showing -----------------------------------------------------------------------------
    def refresh(self, model_id: str) -> None:
        """Offer the model's control kinds (hidden when it has none) and show the active document's list."""
        kinds = tuple(controls.model_kinds(self.controller.welcome, model_id))
        if kinds != self._kinds:
            self._kinds = kinds
            current = self.kind.currentText()
            self.kind.clear()
            self.kind.addItems(list(kinds))
            if current in kinds:
                self.kind.setCurrentText(current)
        self.setVisible(bool(kinds))
        self._offer_from_image()
        self._offer_range()
        self.reload()

    def _offer_from_image(self, *_) -> None:
        """From image only for a kind the server makes, while idle and connected."""
        c = self.controller
        self.from_image.setEnabled(self.kind.currentText() in MADE_KINDS and not c.busy and c.connection_ok)

    def _offer_range(self, *_) -> None:
        """The step range only for the kinds that have one (not the reference kinds)."""
        ranged = controls.has_range(self.kind.currentText())
        self.start.setEnabled(ranged)
        self.end.setEnabled(ranged)

    def reload(self) -> None:
        """The list as the active document stores it."""
        doc = Krita.instance().activeDocument()
        rows = []
        for c in present(doc) if doc is not None else ():
            span = f" ({c.start:g}–{c.end:g})" if controls.has_range(c.kind) else ""
            rows.append((c.layer, f"{node_of(doc, c.layer).name()}: {c.kind} {c.strength:g}{span}", c.enabled))
        self.show_rows(tuple(rows))

    # -- editing the list ----------------------------------------------------------------------
    def _settings(self, layer: str, kind: str) -> controls.ControlLayer:
        return controls.settings(layer, kind, round(self.strength.value(), 4), round(self.start.value(), 4),
                                 round(self.end.value(), 4))

    def _add(self) -> None:
        doc = Krita.instance().activeDocument()
        node = doc.activeNode() if doc is not None else None
        if node is None or node.type().endswith("mask") or node.parentNode() is None:
            self.controller.set_status("Choose the layer to use as a control layer first.", error=True)
            return
        item = self._settings(node.uniqueId().toString(), self.kind.currentText())
        try:
            item.check()
        except ValueError as exc:
            self.controller.set_status(f"Cannot add: {exc}", error=True)
            return
        layers = [c for c in stored(doc) if c.layer != item.layer]  # adding again updates its settings
        store(doc, [*layers, item])
        self.controller.set_status(f"{node.name()!r} steers as {item.kind} (strength {item.strength:g}).")

    # -- From image: the server's guide (preprocess), on the worker thread -----------------------
    def _from_image(self) -> None:
        from .controller import Job

        c, kind = self.controller, self.kind.currentText()
        if c.busy:
            c.set_status("A generation is already running: wait for it, or press Cancel.")
            return
        doc = Krita.instance().activeDocument()
        try:
            source = document.KritaDocument(doc)
            box = source.selection_box() or (0, 0, *source.size())
            image = Image.rgba(box[2], box[3], source.read_canvas(box, layer_ids(doc)))
        except document.DocumentError as exc:
            c.set_status(str(exc), error=True)
            return
        job = Job(document.document_key(doc), None, editing.Params(prompt=""), target="guide", job_id=new_job_id())
        where = (document.placement(doc), box, self._settings("", kind))
        c._run(job, lambda client: client.preprocess(kind, image, c._queue_progress, job=job.job_id),
               f"Making a {kind} guide from the canvas",
               on_done=lambda value, error: c._emit("_guide_done", (job, *where), value, error, owner=self))

    def _on_guide(self, what, value, error) -> None:
        job, placement, box, settings = what
        c = self.controller
        if not c.finish(job, error, "From image failed"):
            return
        doc = document.find_document(job.doc_key)
        if doc is None:
            c.set_status("The document was closed before the guide came.")
            return
        try:
            result = SimpleNamespace(image=value, x=box[0], y=box[1])
            node = document.insert_results(doc, [result], lambda _: controls.guide_name(settings.kind), placement)[0]
        except document.DocumentError as exc:
            c.set_status(str(exc), error=True)
            return
        settings.layer = node.uniqueId().toString()
        store(doc, [*stored(doc), settings])
        c.set_status(f"Added the {settings.kind} guide ({value.width}×{value.height}) as a control layer.")
