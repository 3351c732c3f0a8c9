"""Regions in the docker: paint layers or groups with a prompt of their own, painted where they have paint.

The list is kept with the document (the annotation ``easel-regions``: ``editing.regions``' JSON text, saved in
the .kra) and refers to layers by their unique id. **Add** makes the active layer (or group) a region with the
prompt (and negative) typed above the list; **From selection** (also the ``easel_region_from_selection``
action, "New Region from Selection") adds a new paint layer filled where the selection is and lists it;
**Set prompt** gives the chosen row the typed texts; each row can be switched on and off or removed.
Generate (``controller.generate``) passes ``present`` to ``editing.build_request``, which sends the enabled
ones as ``regions`` (mask: the layer's alpha; the layer stays part of the picture, hide it to keep its paint
out); live painting does the same for every frame (``live_layer.read_regions``). The panel shows only when the
chosen model lists ``regions`` in its features (``editing.fit_to_model`` drops them elsewhere).
"""

from __future__ import annotations

from krita import Krita

from . import document
from .layer_list import ListRows, StoredLayers, node_of
from .qt import (
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    Qt,
    QVBoxLayout,
    QWidget,
    named,
)
from .shared.editing import regions
from .shared.protocol import Image

ANNOTATION = "easel-regions"
#: the colours of the layers "From selection" makes (R, G, B), one after the other
COLOURS = ((230, 80, 60), (60, 120, 230), (70, 180, 90), (220, 180, 40), (170, 90, 200), (40, 190, 200))


# -- the list, kept with the document -------------------------------------------------------------
LAYERS = StoredLayers(ANNOTATION, "Easel regions", regions.from_text, regions.to_text)
stored, store, present = LAYERS.stored, LAYERS.store, LAYERS.present  # deleted layers are not present


def fill_selection(doc, name: str, colour: tuple[int, int, int]):
    """A new paint layer named ``name`` above the active one, ``colour`` where the selection is (its soft
    values as alpha); None when nothing is selected."""
    box = document.selection_box(doc)
    if box is None:
        return None
    x, y, w, h = box
    mask = document.read_selection(doc, x, y, w, h) or bytes(w * h)
    r, g, b = colour
    rgba = b"".join(bytes((r, g, b, v)) for v in mask)
    node = document.insert_layer(doc, name, Image.rgba(w, h, rgba), x, y)
    doc.refreshProjection()
    return node


def _layer_name(prompt: str) -> str:
    text = " ".join(prompt.split())
    return f"Region: {text if len(text) <= 30 else text[:29] + '…'}"


class RegionPanel(ListRows, QWidget):
    """Prompt and negative, Add / From selection / Set prompt / Remove and the active document's regions."""

    def __init__(self, controller, parent=None):
        super().__init__(parent)
        self.controller = controller
        self.layers = LAYERS
        self._shown: tuple = ()
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(QLabel("Regions"))
        self.prompt = named(QLineEdit(), "easel_region_prompt", "What to paint in the region (added to the prompt)")
        self.prompt.setPlaceholderText("region prompt")
        self.negative = named(QLineEdit(), "easel_region_negative", "What to avoid there (optional)")
        self.negative.setPlaceholderText("region negative (optional)")
        box.addWidget(self.prompt)
        box.addWidget(self.negative)
        self.add = named(QPushButton("Add"), "easel_region_add",
                         "Make the active layer or group a region with this prompt: its paint is the region")
        self.from_selection = named(QPushButton("From selection"), "easel_region_from_selection",
                                    "A new layer filled where the selection is, as a region with this prompt")
        self.set_prompt = named(QPushButton("Set prompt"), "easel_region_set",
                                "Give the chosen row the prompt and negative typed above")
        self.remove = named(QPushButton("Remove"), "easel_region_remove",
                            "The chosen row is no longer a region (the layer itself stays)")
        row = QHBoxLayout()
        for widget in (self.add, self.from_selection, self.set_prompt, self.remove):
            row.addWidget(widget)
        box.addLayout(row)
        self.list = named(QListWidget(), "easel_region_list",
                          "This document's regions: tick to use, untick to leave out")
        self.list.setFixedHeight(80)
        box.addWidget(self.list)
        self.add.clicked.connect(self._add)
        self.from_selection.clicked.connect(self.new_from_selection)
        self.set_prompt.clicked.connect(self._set_prompt)
        self.remove.clicked.connect(self._remove)
        self.list.itemChanged.connect(self._toggled)
        self.list.currentItemChanged.connect(self._chosen)

    # -- showing -----------------------------------------------------------------------------
    def refresh(self, model_id: str) -> None:
        """Shown only when the model can use regions; the active document's list."""
        self.setVisible(regions.model_has_regions(self.controller.welcome, model_id or None))
        self.reload()

    def reload(self) -> None:
        """The list as the active document stores it."""
        doc = Krita.instance().activeDocument()
        self.show_rows(tuple((r.layer, regions.layer_label(node_of(doc, r.layer).name(), r), r.enabled)
                             for r in present(doc)) if doc is not None else ())

    def _chosen(self, item, _previous=None) -> None:
        """A row chosen: its texts in the fields, to edit and Set."""
        doc = Krita.instance().activeDocument()
        layer = item.data(Qt.ItemDataRole.UserRole) if item is not None else None
        for r in stored(doc):
            if r.layer == layer:
                self.prompt.setText(r.prompt)
                self.negative.setText(r.negative_prompt)

    # -- editing the list ----------------------------------------------------------------------
    def _typed(self, layer: str) -> regions.RegionLayer | None:
        """The region the fields describe for ``layer``; None (said in the status) when it has no prompt."""
        region = regions.RegionLayer(layer, self.prompt.text().strip(), self.negative.text().strip())
        try:
            region.check()
        except ValueError:
            self.controller.set_status("Type the region's prompt first (what to paint there).", error=True)
            return None
        return region

    def _put(self, doc, region: regions.RegionLayer) -> None:
        layers = stored(doc)
        at = next((i for i, r in enumerate(layers) if r.layer == region.layer), None)
        if at is None:
            layers.append(region)
        else:  # adding again (or Set prompt) updates its texts
            region.enabled = layers[at].enabled
            layers[at] = region
        store(doc, layers)
        self.reload()

    def _add(self) -> None:
        doc = Krita.instance().activeDocument()
        node = doc.activeNode() if doc is not None else None
        if node is None or node.type().endswith("mask") or node.parentNode() is None:
            self.controller.set_status("Choose the layer (or group) to use as a region first.", error=True)
            return
        region = self._typed(node.uniqueId().toString())
        if region is not None:
            self._put(doc, region)
            self.controller.set_status(f"{node.name()!r} is a region: {region.prompt}")

    def new_from_selection(self) -> None:
        """A new paint layer filled where the selection is, added as a region with the typed prompt."""
        doc = Krita.instance().activeDocument()
        region = self._typed("")
        if doc is None or region is None:
            return
        try:
            node = fill_selection(doc, _layer_name(region.prompt), COLOURS[len(stored(doc)) % len(COLOURS)])
        except document.DocumentError as exc:
            self.controller.set_status(str(exc), error=True)
            return
        if node is None:
            self.controller.set_status("Select the region's area first.", error=True)
            return
        region.layer = node.uniqueId().toString()
        self._put(doc, region)
        self.controller.set_status(f"New region {node.name()!r} from the selection.")

    def _set_prompt(self) -> None:
        doc, layer = Krita.instance().activeDocument(), self.chosen_layer()
        if doc is None or layer is None:
            self.controller.set_status("Choose a region in the list first.", error=True)
            return
        region = self._typed(layer)
        if region is not None:
            self._put(doc, region)
