"""The docker's regions in a real Krita: a "Left" paint layer (paint on the left half) added as a region with
Add, a "Right" region made by the "New Region from Selection" action over the right half, Generate on the
first model and on ``xl_model``, then the document saved as .kra and opened again.

Run by driver.py on its main document, through public widgets (objectName) and actions only. Writes the
region layers' dumps (RGBA) for tests/editors/test_krita_regions.py, which builds the same requests from
them, sends them directly and compares pixel for pixel.
"""

import os

from krita import Krita, Selection
from PyQt5.QtWidgets import QComboBox, QLineEdit, QListWidget, QPushButton

from .controls_part import annotation, rows
from .driver import sleep, swap
from .power_part import _generate

ANNOTATION, LIST = "easel-regions", "easel_region_list"


def run(d, doc, spec):
    app = Krita.instance()
    W, H = doc.width(), doc.height()
    res = d.res["regions"] = {}
    app.action("deselect").trigger()
    doc.waitForDone()
    yield sleep(0.3)
    res["shown"] = d.w(QListWidget, LIST).isVisible()
    prompt, negative = d.w(QLineEdit, "easel_region_prompt"), d.w(QLineEdit, "easel_region_negative")

    sketch = doc.activeNode()
    left = doc.createNode("Left", "paintlayer")
    doc.rootNode().addChildNode(left, sketch)
    half = W // 2
    left.setPixelData(bytes([30, 30, 200, 255]) * (half * H), 0, 0, half, H)  # B, G, R, A
    doc.refreshProjection()
    doc.setActiveNode(left)
    yield sleep(0.3)
    prompt.setText(spec["left"][0])
    negative.setText(spec["left"][1])
    d.w(QPushButton, "easel_region_add").click()
    yield sleep(0.3)

    sel = Selection()
    sel.select(half, 0, W - half, H, 255)
    doc.setSelection(sel)
    doc.waitForDone()
    prompt.setText(spec["right"][0])
    negative.setText(spec["right"][1])
    app.action("easel_region_from_selection").trigger()
    yield sleep(0.5)
    app.action("deselect").trigger()
    doc.waitForDone()
    yield sleep(0.3)
    right = next((n for n in d.layers(doc) if n.name().startswith("Region:")), None)
    res["added"] = {"rows": rows(d, LIST), "annotation": annotation(doc, ANNOTATION), "status": d.w_status(),
                    "ids": [left.uniqueId().toString(), right.uniqueId().toString() if right else None],
                    "right_name": right.name() if right else None}
    d.write("regions-left.rgba", swap(left.pixelData(0, 0, W, H)))
    if right is not None:
        d.write("regions-right.rgba", swap(right.pixelData(0, 0, W, H)))
    d.log(f"regions: added: {d.w_status()}")
    d.save()

    doc.setActiveNode(sketch)
    d.set_params(spec["params"])
    generate = lambda: app.action("easel_generate").trigger()  # noqa: E731
    res["sd"] = yield from _generate(d, doc, "regions-sd", W, H, generate)
    res["sd"]["model"] = d.w(QComboBox, "easel_model").currentText()
    d.save()
    model = d.w(QComboBox, "easel_model")
    model.setCurrentText(spec["xl_model"])
    yield sleep(0.3)
    res["xl_shown"] = d.w(QListWidget, LIST).isVisible()
    res["xl"] = yield from _generate(d, doc, "regions-xl", W, H, generate)
    res["xl"]["model"] = model.currentText()
    model.setCurrentIndex(0)
    yield sleep(0.3)
    d.save()

    path = os.path.join(d.out, "regions.kra")
    doc.setBatchmode(True)
    saved = doc.saveAs(path)
    doc.waitForDone()
    reopened = app.openDocument(path)
    record = {"saved": saved, "opened": reopened is not None}
    if reopened is not None:
        app.activeWindow().addView(reopened)
        app.setActiveDocument(reopened)
        yield sleep(1.0)
        record.update(annotation=annotation(reopened, ANNOTATION), rows=rows(d, LIST),
                      layers=[n.uniqueId().toString() for n in d.layers(reopened)])
        reopened.setModified(False)
        reopened.close()
        yield sleep(0.5)
        app.setActiveDocument(doc)
    res["reopened"] = record
    d.save()
    return res
