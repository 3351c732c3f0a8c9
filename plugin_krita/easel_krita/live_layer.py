"""Krita's side of live painting: read the canvas without the live layer, and the live layer itself.

The live result is shown in one paint layer, ``Easel Live``, at the top of the stack, locked,
created on the first frame and then updated in place with ``setPixelData``. It must not feed back
into the next frame, so the canvas is not read from Krita's projection (which contains it) but
composed here from the other top-level layers' own projections with QPainter: their opacity and
the common blending modes are kept; rarer modes are drawn as Normal. For a stack of Normal layers
this is Krita's own result, byte for byte where layers are opaque.

Live painting works on 8-bit RGB documents (the composition needs Krita's BGRA memory order);
deeper documents get a plain message (Generate works at every depth).
"""

from __future__ import annotations

from . import control_layers, regions_panel
from .document import DocumentError, check_document, is_native_u8, placement, read_selection, selection_box
from .qt import QColor, QImage, QPainter, qimage_bytes
from .shared import editing
from .shared.protocol import Image

LIVE_NAME = editing.LIVE_LAYER_NAME

#: Krita blending mode id -> QPainter composition mode name (others are drawn as Normal).
BLEND_MODES = {
    "normal": "CompositionMode_SourceOver", "multiply": "CompositionMode_Multiply", "screen": "CompositionMode_Screen",
    "overlay": "CompositionMode_Overlay", "darken": "CompositionMode_Darken", "lighten": "CompositionMode_Lighten",
    "dodge": "CompositionMode_ColorDodge", "burn": "CompositionMode_ColorBurn",
    "hard_light": "CompositionMode_HardLight", "soft_light_svg": "CompositionMode_SoftLight",
    "diff": "CompositionMode_Difference", "exclusion": "CompositionMode_Exclusion", "add": "CompositionMode_Plus",
}


def check_live_document(doc) -> None:
    check_document(doc)
    if not is_native_u8(doc):
        raise DocumentError(
            f"Live painting needs an 8-bit RGB document (this one is {doc.colorModel()}/{doc.colorDepth()}): "
            "convert it with Image > Convert Image Color Space… to RGB/Alpha 8-bit, or use Generate, "
            "which works at every depth.")


def is_live(node) -> bool:
    return node.name() == LIVE_NAME and node.type() == "paintlayer"


def live_layers(doc) -> list:
    """The live layers at the top level of ``doc`` (normally one; none before the first frame)."""
    return [node for node in doc.rootNode().childNodes() if is_live(node)]


def _composition(name: str):
    return getattr(QPainter.CompositionMode, BLEND_MODES.get(name, "CompositionMode_SourceOver"))


def read_without_live(doc, x: int, y: int, w: int, h: int, skip=frozenset()) -> bytes:
    """RGBA (8-bit) of what the canvas shows in x, y, w, h, leaving out the live layer and the top-level
    layers whose unique ids are in ``skip`` (the control layers)."""
    canvas = QImage(w, h, QImage.Format.Format_ARGB32_Premultiplied)
    background = doc.backgroundColor()
    canvas.fill(background if background.alpha() else QColor(0, 0, 0, 0))
    painter = QPainter(canvas)
    try:
        for node in doc.rootNode().childNodes():  # bottom to top
            if not node.visible() or node.type().endswith("mask") or is_live(node) or node.opacity() == 0 \
                    or (skip and node.uniqueId().toString() in skip):
                continue
            data = bytes(node.projectionPixelData(x, y, w, h))
            if len(data) != w * h * 4:
                continue  # a node without pixels of its own
            layer = QImage(data, w, h, w * 4, QImage.Format.Format_ARGB32)  # B, G, R, A in memory, like Krita
            painter.setOpacity(node.opacity() / 255.0)
            painter.setCompositionMode(_composition(node.blendingMode()))
            painter.drawImage(0, 0, layer)
    finally:
        painter.end()
    return qimage_bytes(canvas.convertToFormat(QImage.Format.Format_RGBA8888))


def read_live_state(doc, strength: float) -> editing.EditorState:
    """``document.read_state`` for a live frame: the same mode and region, the live layer left out."""
    check_live_document(doc)
    width, height = doc.width(), doc.height()
    mode, region = editing.read_plan(width, height, selection_box(doc), strength)
    if region is None:
        return editing.EditorState(width, height)
    x, y, w, h = region
    mask = read_selection(doc, x, y, w, h) if mode == editing.INPAINT else None
    skip = control_layers.layer_ids(doc)  # control layers steer (``read_controls``), they are not painted
    return editing.EditorState(width, height, read_without_live(doc, x, y, w, h, skip), region, mask)


def read_controls(doc, state: editing.EditorState) -> editing.live.FrameControls:
    """The enabled control layers over what a frame of ``state`` sends, as Generate sends them."""
    from .document import KritaDocument

    source = KritaDocument(doc)
    return editing.control_items(control_layers.present(doc), source.read_layer, state.box, source.layer_bounds)


def read_regions(doc, state: editing.EditorState) -> editing.live.FrameRegions:
    """The enabled region layers over what a frame of ``state`` sends, as Generate sends them."""
    from .document import KritaDocument

    return editing.region_items(regions_panel.present(doc), KritaDocument(doc).read_layer, state.box)


def show(doc, image: Image, x: int, y: int, previous: tuple[int, int, int, int] | None = None):
    """Put a live frame into the live layer (created on top, locked, on first use); returns the node.

    ``previous`` is the rectangle the last frame covered: cleared first when this one differs.
    """
    layers = live_layers(doc)
    for extra in layers[1:]:
        extra.remove()
    if layers:
        node = layers[0]
        if previous is None:  # a live layer of an earlier session (e.g. back by Undo): start clean
            b = node.bounds()
            if b.width() > 0 and b.height() > 0:
                node.setPixelData(bytes(b.width() * b.height() * 4), b.x(), b.y(), b.width(), b.height())
    else:
        node = doc.createNode(LIVE_NAME, "paintlayer")
        doc.rootNode().addChildNode(node, None)  # on top of the stack
        node.setLocked(True)  # a preview: not to be painted on
        previous = None
    rect = (x, y, image.width, image.height)
    if previous is not None and previous != rect:
        px, py, pw, ph = previous
        node.setPixelData(bytes(pw * ph * 4), px, py, pw, ph)
    if image.format == "rgba":
        bgra = editing.rgba_to_bgra(image.data)
    else:
        decoded = QImage.fromData(image.data).convertToFormat(QImage.Format.Format_RGBA8888)
        bgra = editing.rgba_to_bgra(qimage_bytes(decoded))
    node.setPixelData(bgra, x, y, image.width, image.height)
    doc.refreshProjection()
    return node


def remove(doc) -> int:
    """Remove the live layer(s); returns how many there were."""
    layers = live_layers(doc)
    for node in layers:
        node.remove()
    if layers:
        doc.refreshProjection()
    return len(layers)


def apply(doc, name: str, image: Image, x: int, y: int):
    """Copy a live frame into a normal new paint layer named ``name``, above the active layer,
    but never above the live layer (it stays on top); returns the new node."""
    from .document import insert_layer

    parent, above = placement(doc)
    live = live_layers(doc)
    if live and (above is None or is_live(above)):  # would go on top, or the live layer is active
        parent = doc.rootNode()
        siblings = parent.childNodes()
        index = [n.uniqueId() for n in siblings].index(live[0].uniqueId())
        above = siblings[index - 1] if index > 0 else None
    node = insert_layer(doc, name, image, x, y, parent, above)
    doc.refreshProjection()
    return node
