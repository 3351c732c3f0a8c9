"""The docker's control layers in a real Krita: Add two layers as lineart and depth control layers,
Generate (and, with ``xl_model``, Generate again on that SDXL model), switch one off, Generate again; with
``reference``, Add a smaller picture as a style reference (no range, no From image), Generate on the SD and the
SDXL model and again with it switched off; "From image" (canny; offered only for the kinds the server makes),
and the ``made_kinds`` guides made by the server's models the same way, then save the document as .kra and open
it again.

Run by driver.py on its main document, through public widgets (objectName) and actions only.
Writes layer and canvas dumps (RGBA) for tests/editors/test_krita_controls.py, which asks the same
server the same requests directly and compares pixel for pixel.
"""

import os

from krita import Krita
from PyQt5.QtCore import Qt
from PyQt5.QtWidgets import QComboBox, QDoubleSpinBox, QListWidget, QPushButton

from .driver import sleep, swap
from .power_part import _generate

ANNOTATION = "easel-controls"


def annotation(doc, name=ANNOTATION):
    """The document's annotation ``name`` (the control layers' list by default) as text."""
    return bytes(doc.annotation(name)).decode("utf-8", "replace")


def rows(d, list_name="easel_control_list"):
    """[[text, ticked], …] of the docker's list ``list_name`` (the control layers' by default)."""
    box = d.w(QListWidget, list_name)
    return [[box.item(i).text(), box.item(i).checkState() == Qt.CheckState.Checked] for i in range(box.count())]


def hidden_canvas(d, doc, nodes, name):
    """Dump the visible canvas with ``nodes`` hidden (what Generate must send), then show them again."""
    W, H = doc.width(), doc.height()
    for node in nodes:
        node.setVisible(False)
    doc.refreshProjection()
    d.write(name, swap(doc.pixelData(0, 0, W, H)))
    for node in nodes:
        node.setVisible(True)
    doc.refreshProjection()


def add(d, doc, node, kind, strength, start, end):
    doc.setActiveNode(node)
    d.w(QComboBox, "easel_control_kind").setCurrentText(kind)
    d.w(QDoubleSpinBox, "easel_control_layer_strength").setValue(strength)
    d.w(QDoubleSpinBox, "easel_control_start").setValue(start)
    d.w(QDoubleSpinBox, "easel_control_end").setValue(end)
    d.w(QPushButton, "easel_control_add").click()


def run(d, doc, spec):
    app = Krita.instance()
    W, H = doc.width(), doc.height()
    res = d.res["controls"] = {}  # saved after each step (a hang shows where)

    def step(name):
        d.log(f"controls: {name}: {d.w_status()}")
        d.save()

    sketch = doc.activeNode()
    kind = d.w(QComboBox, "easel_control_kind")
    res["offered"] = {"shown": kind.isVisible(), "kinds": [kind.itemText(i) for i in range(kind.count())]}

    root = doc.rootNode()
    lines = doc.createNode("Lines", "paintlayer")  # dark lines on transparent paper: inverted when sent
    root.addChildNode(lines, sketch)
    x, y, w, h = spec["lines_box"]
    for bx, by, bw, bh in ((x, y, w, 2), (x, y + h - 2, w, 2), (x, y, 2, h), (x + w - 2, y, 2, h)):
        lines.setPixelData(bytes([20, 20, 20, 255]) * (bw * bh), bx, by, bw, bh)
    depth = doc.createNode("Depth", "paintlayer")  # an opaque ramp over everything: must not be painted
    root.addChildNode(depth, lines)
    ramp = b"".join(bytes([v, v, v, 255]) for v in (round(255 * i / (W - 1)) for i in range(W)))
    depth.setPixelData(ramp * H, 0, 0, W, H)
    doc.refreshProjection()
    yield sleep(0.3)
    d.write("controls-lines.rgba", swap(lines.pixelData(0, 0, W, H)))
    d.write("controls-depth.rgba", swap(depth.pixelData(0, 0, W, H)))
    d.write("controls-visible.rgba", swap(doc.pixelData(0, 0, W, H)))
    hidden_canvas(d, doc, [lines, depth], "controls-canvas.rgba")

    for node, key in ((lines, "lineart"), (depth, "depth")):
        add(d, doc, node, key, *spec[key])
        yield sleep(0.3)
    res["added"] = {"rows": rows(d), "annotation": annotation(doc), "status": d.w_status(),
                    "ids": [lines.uniqueId().toString(), depth.uniqueId().toString()]}

    step("added")
    doc.setActiveNode(sketch)  # results go right above the active layer
    d.set_params(spec["params"])
    generate = lambda: app.action("easel_generate").trigger()  # noqa: E731
    res["both"] = yield from _generate(d, doc, "controls-both", W, H, generate)

    step("both")
    if spec.get("xl_model"):  # the same two layers on SDXL (one ControlNet Union serves both kinds)
        model = d.w(QComboBox, "easel_model")
        model.setCurrentText(spec["xl_model"])
        yield sleep(0.3)
        res["xl_kinds"] = [kind.itemText(i) for i in range(kind.count())]
        hidden_canvas(d, doc, [lines, depth], "controls-canvas-xl.rgba")  # the first result is part of it now
        res["both_xl"] = yield from _generate(d, doc, "controls-both-xl", W, H, generate)
        res["both_xl"]["model"] = model.currentText()
        model.setCurrentIndex(0)
        yield sleep(0.3)
        step("both on SDXL")
    box = d.w(QListWidget, "easel_control_list")
    for i in range(box.count()):
        if box.item(i).text().startswith("Depth"):
            box.item(i).setCheckState(Qt.CheckState.Unchecked)
    yield sleep(0.3)
    res["toggled"] = {"rows": rows(d), "annotation": annotation(doc)}
    hidden_canvas(d, doc, [lines, depth], "controls-canvas2.rgba")  # the first result is part of it now
    res["one"] = yield from _generate(d, doc, "controls-one", W, H, generate)

    step("one")
    refs = []
    if spec.get("reference"):  # a style reference beside the line art: sent whole, on SD 1.5 and SDXL
        refs = [(yield from reference(d, doc, spec, sketch, lines, depth, generate, res))]
    # From image: the server's canny of the visible canvas (the control layers left out) as a new control layer
    hidden_canvas(d, doc, [lines, depth, *refs], "controls-source.rgba")
    d.write("controls-source-visible.rgba", swap(doc.pixelData(0, 0, W, H)))
    kind.setCurrentText("canny")
    res["from_image"] = yield from _generate(d, doc, "controls-canny", W, H,
                                             lambda: d.w(QPushButton, "easel_control_from_image").click())
    res["from_image"].update(rows=rows(d), annotation=annotation(doc))
    for made in spec.get("made_kinds", ()):  # the model-made guides (line art, depth) the same way
        guides = [n for n in d.layers(doc) if n.name().startswith("Easel guide")]  # control layers too
        hidden_canvas(d, doc, [lines, depth, *refs, *guides], f"controls-source-{made}.rgba")
        kind.setCurrentText(made)
        res[f"from_image_{made}"] = yield from _generate(d, doc, f"controls-{made}", W, H,
                                                         lambda: d.w(QPushButton, "easel_control_from_image").click())
    # "From image" is offered only for the kinds the server's preprocess makes (Add takes any of the model's)
    button, enabled = d.w(QPushButton, "easel_control_from_image"), {}
    for name in ("lineart", "depth", "canny"):
        kind.setCurrentText(name)
        yield sleep(0.2)
        enabled[name] = button.isEnabled()
    res["from_image_kinds"] = {"offered": [kind.itemText(i) for i in range(kind.count())], "enabled": enabled}

    step("from image")
    # the list is saved in the .kra and comes back with it
    path = os.path.join(d.out, "controls.kra")
    doc.setBatchmode(True)
    saved = doc.saveAs(path)
    doc.waitForDone()
    step(f"saved {saved}")
    reopened = app.openDocument(path)
    record = {"saved": saved, "opened": reopened is not None}
    if reopened is not None:
        app.activeWindow().addView(reopened)
        app.setActiveDocument(reopened)
        yield sleep(1.0)
        record.update(annotation=annotation(reopened), rows=rows(d),
                      layers={n.uniqueId().toString(): n.name() for n in d.layers(reopened)})
        reopened.setModified(False)
        reopened.close()
        yield sleep(0.5)
        app.setActiveDocument(doc)
    res["reopened"] = record
    return res


def reference(d, doc, spec, sketch, lines, depth, generate, res):
    """Add the ``reference`` picture (a layer smaller than the canvas, at an offset) as a style reference with the
    range fields set (they are off for it), Generate on SD and on ``xl_model``, switch it off, Generate again."""
    W, H = doc.width(), doc.height()
    x, y, w, h = spec["reference"]["box"]
    ref = doc.createNode("Ref", "paintlayer")
    doc.rootNode().addChildNode(ref, depth)
    ref.setPixelData(bytes((17 * i % 256, 255 - 3 * i % 256, 90, 255)[c] for i in range(w * h) for c in range(4)),
                     x, y, w, h)
    doc.refreshProjection()
    yield sleep(0.3)
    b = ref.bounds()
    d.write("controls-ref.rgba", swap(ref.pixelData(x, y, w, h)))
    kind = d.w(QComboBox, "easel_control_kind")
    add(d, doc, ref, "style", spec["reference"]["strength"], 0.3, 0.6)  # the range is not the reference's
    yield sleep(0.3)
    res["ref_added"] = {"rows": rows(d), "annotation": annotation(doc), "bounds": [b.x(), b.y(), b.width(), b.height()],
                        "range_enabled": d.w(QDoubleSpinBox, "easel_control_start").isEnabled(),
                        "from_image_enabled": d.w(QPushButton, "easel_control_from_image").isEnabled()}
    kind.setCurrentText("lineart")
    yield sleep(0.2)
    res["ref_added"]["range_enabled_lineart"] = d.w(QDoubleSpinBox, "easel_control_start").isEnabled()
    doc.setActiveNode(sketch)
    hidden_canvas(d, doc, [lines, depth, ref], "controls-canvas-ref.rgba")
    res["ref"] = yield from _generate(d, doc, "controls-ref", W, H, generate)
    model = d.w(QComboBox, "easel_model")
    model.setCurrentText(spec["xl_model"])
    yield sleep(0.3)
    hidden_canvas(d, doc, [lines, depth, ref], "controls-canvas-ref-xl.rgba")
    res["ref_xl"] = yield from _generate(d, doc, "controls-ref-xl", W, H, generate)
    res["ref_xl"]["model"] = model.currentText()
    model.setCurrentIndex(0)
    yield sleep(0.3)
    box = d.w(QListWidget, "easel_control_list")
    for i in range(box.count()):
        if box.item(i).text().startswith("Ref"):
            box.item(i).setCheckState(Qt.CheckState.Unchecked)
    yield sleep(0.3)
    hidden_canvas(d, doc, [lines, depth, ref], "controls-canvas-ref-off.rgba")
    res["ref_off"] = yield from _generate(d, doc, "controls-ref-off", W, H, generate)
    res["ref_off"]["rows"] = rows(d)
    d.log(f"controls: reference: {d.w_status()}")
    d.save()
    return ref
