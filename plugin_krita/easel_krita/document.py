"""Krita's side of the pixels: read the canvas and the selection, insert result layers.

Only libkis calls live here; what to read and what to send is decided by ``shared.editing``.
Memory order: an RGBA document of 8 or 16 bits per channel stores B, G, R, A; float documents
store R, G, B, A. 8-bit documents are read and written as they are (BGRA <-> RGBA swap);
16-bit and float documents go through Krita's own colour conversion to 8-bit sRGB and back.
"""

from __future__ import annotations

from krita import Krita

from .qt import QImage, Qt, QUuid, qimage_bytes
from .shared import editing
from .shared.protocol import Image

SRGB_U8_PROFILE = "sRGB-elle-V2-srgbtrc.icc"  # Krita's default 8-bit sRGB; what projection() converts to
MODEL_NAMES = {"GRAYA": "Grayscale", "CMYKA": "CMYK", "LABA": "L*a*b*", "XYZA": "XYZ", "YCbCrA": "YCbCr"}


class DocumentError(Exception):
    """A document Easel cannot work on; the message says what to do, in plain words."""


def check_document(doc) -> None:
    """Refuse documents that are not RGB, with a message that tells the painter the fix."""
    if doc is None:
        raise DocumentError("Open or create a document first, then press Generate.")
    model = doc.colorModel()
    if model != "RGBA":
        name = MODEL_NAMES.get(model, model)
        raise DocumentError(
            f"This document is {name} ({model}/{doc.colorDepth()}). Easel paints on RGB documents: "
            "convert it with Image > Convert Image Color Space… to RGB/Alpha (any depth), "
            "or paint on an RGB copy.")


def is_native_u8(doc) -> bool:
    return doc.colorModel() == "RGBA" and doc.colorDepth() == "U8"


def read_canvas(doc, x: int, y: int, w: int, h: int) -> bytes:
    """RGBA (8-bit, row-major) of the visible canvas in the rectangle x, y, w, h."""
    if is_native_u8(doc):
        return editing.bgra_to_rgba(bytes(doc.pixelData(x, y, w, h)))
    image = doc.projection(x, y, w, h).convertToFormat(QImage.Format.Format_RGBA8888)
    return qimage_bytes(image)


def selection_box(doc) -> tuple[int, int, int, int] | None:
    """Bounds of the document's selection, or None when nothing is selected."""
    selection = doc.selection()
    if selection is None or selection.width() <= 0 or selection.height() <= 0:
        return None
    return selection.x(), selection.y(), selection.width(), selection.height()


def read_selection(doc, x: int, y: int, w: int, h: int) -> bytes | None:
    """The selection as a gray8 mask (0 keep .. 255 regenerate, soft values kept) for a rectangle."""
    selection = doc.selection()
    if selection is None:
        return None
    return bytes(selection.pixelData(x, y, w, h))


class KritaDocument:
    """A Krita document as ``editing.Document``: what ``editing.build_request`` reads from it."""

    def __init__(self, doc):
        check_document(doc)
        self.doc = doc

    def size(self) -> tuple[int, int]:
        return self.doc.width(), self.doc.height()

    def selection_box(self) -> tuple[int, int, int, int] | None:
        return selection_box(self.doc)

    def read_canvas(self, box: editing.Box, exclude=()) -> bytes:
        """The visible canvas; the ``exclude`` layers (control layers) are hidden while it is read."""
        hidden = [node for node in map(self._node, exclude) if node is not None and node.visible()]
        if not hidden:
            return read_canvas(self.doc, *box)
        for node in hidden:
            node.setVisible(False)
        try:
            self.doc.refreshProjection()
            return read_canvas(self.doc, *box)
        finally:
            for node in hidden:
                node.setVisible(True)
            self.doc.refreshProjection()

    def read_layer(self, layer: str, box: editing.Box) -> bytes:
        """One layer's own pixels (its content at 8-bit sRGB), whatever its visibility or opacity."""
        node = self._node(layer)
        if node is None:
            raise DocumentError("A control layer was deleted: remove it from the control layers list.")
        x, y, w, h = box
        if is_native_u8(self.doc):
            return editing.bgra_to_rgba(bytes(node.pixelData(x, y, w, h)))
        image = node.thumbnail(self.doc.width(), self.doc.height()).copy(x, y, w, h)  # converted to 8-bit sRGB
        return qimage_bytes(image.convertToFormat(QImage.Format.Format_RGBA8888))

    def layer_bounds(self, layer: str) -> editing.Box | None:
        """Where the layer has pixels (the node's bounds; a reference layer is sent whole), None when empty."""
        node = self._node(layer)
        if node is None:
            raise DocumentError("A control layer was deleted: remove it from the control layers list.")
        b = node.bounds()
        return (b.x(), b.y(), b.width(), b.height()) if b.width() > 0 and b.height() > 0 else None

    def _node(self, layer: str):
        return self.doc.nodeByUniqueID(QUuid(layer))

    def read_selection(self, box: editing.Box) -> bytes:
        return read_selection(self.doc, *box) or bytes(box[2] * box[3])


def read_state(doc, strength: float) -> editing.EditorState:
    """Everything ``editing.plan_request`` needs from this document, reading only what the mode needs."""
    return editing.read_state(KritaDocument(doc), strength)


def image_to_bgra(image: Image) -> bytes:
    """A result image (raw RGBA, or PNG/WebP) as 8-bit BGRA bytes, Krita's memory order."""
    if image.format == "rgba":
        return editing.rgba_to_bgra(image.data)
    decoded = QImage.fromData(image.data)
    if decoded.isNull():
        raise DocumentError(f"the server sent an image Krita cannot decode ({image.format})")
    decoded = decoded.convertToFormat(QImage.Format.Format_RGBA8888)
    return editing.rgba_to_bgra(qimage_bytes(decoded))


def placement(doc):
    """(parent, above): where a new layer goes so that it sits right above the active layer."""
    root = doc.rootNode()
    node = doc.activeNode()
    while node is not None and node.type().endswith("mask"):  # masks (e.g. "Selection Mask") hold no layers
        node = node.parentNode()
    if node is None or node.parentNode() is None:  # nothing active, or the root: on top of the stack
        return root, None
    return node.parentNode(), node


def _still_there(parent, above) -> bool:
    """True when ``above`` (or the top of ``parent``, for None) is still a child of ``parent``."""
    try:
        children = parent.childNodes()  # raises if the parent is gone
        if above is None:
            return True
        uid = above.uniqueId()
        return any(child.uniqueId() == uid for child in children)
    except RuntimeError:  # the node was deleted
        return False


def insert_layer(doc, name: str, image: Image, x: int, y: int, parent=None, above=None):
    """Add a paint layer named ``name`` holding ``image`` at document offset x, y; returns the node.

    Existing layers are not touched: the new node is the only change (one undo step to remove it).
    """
    check_document(doc)
    if parent is None:
        parent, above = placement(doc)
    node = doc.createNode(name, "paintlayer")
    parent.addChildNode(node, above)
    bgra = image_to_bgra(image)
    if is_native_u8(doc):
        node.setPixelData(bgra, x, y, image.width, image.height)
    else:  # 16-bit / float: write 8-bit sRGB, then let Krita convert to the document's space
        model, depth, profile = doc.colorModel(), doc.colorDepth(), doc.colorProfile()
        node.setColorSpace("RGBA", "U8", SRGB_U8_PROFILE)
        node.setPixelData(bgra, x, y, image.width, image.height)
        node.setColorSpace(model, depth, profile)
    return node


def insert_results(doc, images, name_for, where: tuple | None = None) -> list:
    """Insert result images (objects with ``image``, ``x``, ``y``, ``seed``) as layers above the active one.

    ``where``: the (parent, above) placement captured when the request was made, used while that
    layer is still in place (else the active layer now). Each new layer goes above the previous
    one, so the first image of a batch is the lowest. ``name_for(result)`` names each layer.
    Returns the new nodes.
    """
    parent, above = where if where is not None and _still_there(*where) else placement(doc)
    nodes = []
    for result in images:
        node = insert_layer(doc, name_for(result), result.image, result.x, result.y, parent, above)
        nodes.append(node)
        above = node
    doc.refreshProjection()
    return nodes


def document_key(doc) -> str:
    """A stable identity for an open document (its root node's unique id)."""
    return doc.rootNode().uniqueId().toString()


def find_document(key: str):
    """The open document with ``document_key`` == key, or None once it was closed."""
    for doc in Krita.instance().documents():
        if document_key(doc) == key:
            return doc
    return None



def open_in_new_document(image: Image, name: str):
    """A new 8-bit RGB document of the image's size, shown in the active window, holding ``image``
    in one paint layer (Upscale: the original document is left untouched). Returns the document."""
    app = Krita.instance()
    doc = app.createDocument(image.width, image.height, name, "RGBA", "U8", "", 72.0)
    if doc is None:
        raise DocumentError(f"Krita could not create a {image.width}×{image.height} document")
    root = doc.rootNode()
    for node in list(root.childNodes()):  # the empty background Krita adds
        node.remove()
    node = doc.createNode(name, "paintlayer")
    root.addChildNode(node, None)
    node.setPixelData(image_to_bgra(image), 0, 0, image.width, image.height)
    window = app.activeWindow()
    if window is not None:
        window.addView(doc)
    app.setActiveDocument(doc)
    doc.refreshProjection()
    return doc


def to_qimage(image: Image) -> QImage:
    """A protocol image (raw RGBA, gray, or PNG/WebP) as a QImage that owns its pixels."""
    if image.format == "rgba":
        return QImage(image.data, image.width, image.height, image.width * 4, QImage.Format.Format_RGBA8888).copy()
    if image.format == "gray":
        return QImage(image.data, image.width, image.height, image.width, QImage.Format.Format_Grayscale8).copy()
    return QImage.fromData(image.data)


def thumbnail(image: Image, side: int = 96) -> QImage:
    """A result's picture scaled to fit ``side`` x ``side`` (the docker's strip)."""
    return to_qimage(image).scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio,
                                   Qt.TransformationMode.SmoothTransformation)


def grow_for_expand(doc, expand: list[int], images) -> None:
    """An expand job's result: grow the document by the margins (the old pixels keep their place), then
    move each result's offset into the grown canvas (docs/protocol.md)."""
    growth = editing.grown_canvas(doc.width(), doc.height(), expand)
    doc.resizeImage(-growth.dx, -growth.dy, growth.width, growth.height)
    for image in images:
        image.x, image.y = growth.place(image.x, image.y)
