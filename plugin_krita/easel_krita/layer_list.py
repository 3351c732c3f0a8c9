"""A list of layers kept with the document and shown as a ticked list: the control layers (control_layers.py)
and the regions (regions_panel.py).

The list is a Krita annotation holding ``editing``'s JSON text of records (``ControlLayer``, ``RegionLayer``)
that name their layer by its unique id and carry an ``enabled`` flag; it is saved in the .kra. A record whose
layer was deleted is kept but no longer ``present``. ``ListRows`` is the panels' shared half: the rows
(rebuilt only when something changed), the chosen row, ticking a row on and off, and Remove.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from krita import Krita

from .qt import QByteArray, QListWidget, QListWidgetItem, Qt, QUuid


def node_of(doc, layer: str):
    """The layer with unique id ``layer``, or None once it was deleted."""
    return doc.nodeByUniqueID(QUuid(layer))


class StoredLayers:
    """The records of one list, as the document's annotation ``annotation`` keeps them."""

    def __init__(self, annotation: str, description: str, from_text: Callable[[str], list],
                 to_text: Callable[[Sequence[Any]], str]):
        self.annotation, self.description, self.from_text, self.to_text = annotation, description, from_text, to_text

    def stored(self, doc) -> list:
        """The document's records, as saved with it (none for None)."""
        if doc is None:
            return []
        return self.from_text(bytes(doc.annotation(self.annotation)).decode("utf-8", "replace"))

    def store(self, doc, records: Sequence[Any]) -> None:
        """Save the list with the document (marks it modified, so the change is saved with it)."""
        doc.setAnnotation(self.annotation, self.description, QByteArray(self.to_text(list(records)).encode()))
        doc.setModified(True)

    def present(self, doc) -> list:
        """The stored records whose layer still exists (a deleted layer no longer counts)."""
        return [r for r in self.stored(doc) if node_of(doc, r.layer) is not None]


class ListRows:
    """The ticked list of a panel: needs ``self.list`` (a QListWidget), ``self.layers`` (its StoredLayers) and
    ``self._shown`` (the rows last shown, an empty tuple at first)."""

    list: QListWidget
    layers: StoredLayers
    _shown: tuple

    def show_rows(self, rows: tuple) -> None:
        """Rows of (layer id, label, enabled), rebuilt only when they changed; the chosen row stays chosen."""
        if rows == self._shown:
            return
        self._shown = rows
        chosen = self.chosen_layer()
        self.list.blockSignals(True)
        self.list.clear()
        for layer, label, enabled in rows:
            item = QListWidgetItem(label, self.list)
            item.setData(Qt.ItemDataRole.UserRole, layer)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if enabled else Qt.CheckState.Unchecked)
            if layer == chosen:
                self.list.setCurrentItem(item)
        self.list.blockSignals(False)

    def chosen_layer(self) -> str | None:
        item = self.list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else None

    def reload(self) -> None:  # the panel's: its rows from the active document
        raise NotImplementedError

    def _remove(self) -> None:
        doc, layer = Krita.instance().activeDocument(), self.chosen_layer()
        if doc is None or layer is None:
            return
        self.layers.store(doc, [r for r in self.layers.stored(doc) if r.layer != layer])
        self.reload()

    def _toggled(self, item) -> None:
        doc = Krita.instance().activeDocument()
        if doc is None:
            return
        layer, on = item.data(Qt.ItemDataRole.UserRole), item.checkState() == Qt.CheckState.Checked
        records = self.layers.stored(doc)
        for r in records:
            if r.layer == layer:
                r.enabled = on
        self.layers.store(doc, records)
        self.reload()
