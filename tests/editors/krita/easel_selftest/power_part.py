"""The docker's "More" group in a real Krita: LoRA + variation, History, second pass and exact size,
sketch guide, Upscale ×2.

Run by driver.py on its main document, through public widgets (objectName) and actions only.
Writes canvas and layer dumps (RGBA) for tests/editors/test_krita.py, which asks the same
server the same requests directly and compares pixel for pixel.
"""

import time

from krita import Krita
from PyQt5.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QLineEdit, QListWidget, QPushButton, QSlider

from .driver import sleep, swap, wait


def _generate(d, doc, name, W, H, trigger):
    """Run one job (``trigger()``), then record the new layers of ``doc`` with dumps."""
    before = d.snapshot(doc)
    t0 = time.time()
    trigger()
    started = d.busy()
    done = yield wait(lambda: not d.busy(), d.spec["timeout"], name)
    doc.waitForDone()
    yield sleep(0.2)
    new = [n for n in d.layers(doc) if n.uniqueId().toString() not in before]
    record = {"done": done, "started_busy": started, "seconds": round(time.time() - t0, 2),
              "status": d.w_status(), "layers": [],
              "unchanged": all(d.snapshot(doc).get(k) == v for k, v in before.items())}
    for i, node in enumerate(new):
        fname = f"power-{name}-layer{i}.rgba"
        d.write(fname, swap(node.pixelData(0, 0, W, H)))
        record["layers"].append({"name": node.name(), "file": fname, "type": node.type()})
    return record


def run(d, doc, spec):
    app = Krita.instance()
    W, H = doc.width(), doc.height()
    res = {}
    app.action("deselect").trigger()  # the selection scenario's selection would make every job an inpaint
    doc.waitForDone()
    yield sleep(0.3)
    res["deselected"] = doc.selection() is None
    more = d.w(QPushButton, "easel_more")
    more.click()
    yield sleep(0.3)
    loras, pick = d.w(QLineEdit, "easel_loras"), d.w(QComboBox, "easel_lora_pick")
    control = d.w(QComboBox, "easel_control_model")
    res["offered"] = d.offered()
    pick.activated.emit(1)  # the picker adds its LoRA to the text with weight 1
    res["picked"] = loras.text()

    # LoRA + variation, text to image at canvas size
    sc = spec["lora"]
    d.set_params(sc)
    loras.setText(sc["loras_text"])
    d.w(QLineEdit, "easel_variation_seed").setText(str(sc["variation_seed"]))
    d.w(QDoubleSpinBox, "easel_variation_strength").setValue(sc["variation_strength"])
    res["lora"] = yield from _generate(d, doc, "lora", W, H, lambda: app.action("easel_generate").trigger())

    # History: list the server's jobs, insert the newest (the LoRA job) as a layer
    history = d.w(QListWidget, "easel_history_list")
    d.w(QPushButton, "easel_history").click()
    listed = yield wait(lambda: history.count() > 0, 30, "history")
    res["history"] = {"listed": listed, "labels": [history.item(i).text() for i in range(history.count())]}
    if listed:
        res["history"]["insert"] = yield from _generate(
            d, doc, "history", W, H, lambda: history.itemActivated.emit(history.item(0)))
    loras.setText("")
    d.w(QLineEdit, "easel_variation_seed").setText("")
    d.w(QDoubleSpinBox, "easel_variation_strength").setValue(0.0)

    # Vary last: the last seed becomes the fixed seed, a new variation seed, strength 0.2, generate
    vary = yield from _generate(d, doc, "vary", W, H, lambda: d.w(QPushButton, "easel_vary").click())
    vary.update(seed=d.w(QLineEdit, "easel_seed").text(), variation_seed=d.w(QLineEdit, "easel_variation_seed").text(),
                variation_strength=d.w(QDoubleSpinBox, "easel_variation_strength").value())
    res["vary"] = vary
    d.w(QLineEdit, "easel_variation_seed").setText("")
    d.w(QDoubleSpinBox, "easel_variation_strength").setValue(0.0)

    # Second pass off, its strength, exact size (docs/imaging.md): text to image at canvas size
    sc = spec["sizes"]
    d.set_params(sc)
    d.w(QCheckBox, "easel_hires").setChecked(False)
    d.w(QDoubleSpinBox, "easel_hires_strength").setValue(sc["hires_strength"])
    d.w(QCheckBox, "easel_exact_size").setChecked(True)
    res["sizes"] = yield from _generate(d, doc, "sizes", W, H, lambda: app.action("easel_generate").trigger())
    res["sizes"]["strength_enabled"] = d.w(QDoubleSpinBox, "easel_hires_strength").isEnabled()
    d.w(QCheckBox, "easel_exact_size").setChecked(False)
    d.w(QCheckBox, "easel_hires").setChecked(True)
    d.w(QDoubleSpinBox, "easel_hires_strength").setValue(0.0)

    # Sketch guide: the visible canvas (inverted when dark on light) as the ControlNet guide
    if control.count():
        sc = spec["sketch"]
        d.set_params(sc)
        d.w(QCheckBox, "easel_sketch_guide").setChecked(True)
        d.w(QDoubleSpinBox, "easel_control_strength").setValue(sc["control_strength"])
        d.write("power-sketch-canvas.rgba", swap(doc.pixelData(0, 0, W, H)))
        res["sketch"] = yield from _generate(d, doc, "sketch", W, H, lambda: app.action("easel_generate").trigger())
        d.w(QCheckBox, "easel_sketch_guide").setChecked(False)

    # Upscale ×2: a new document with the server's pixels, the original untouched
    sc = spec["upscale"]
    d.set_params(sc)
    d.w(QSlider, "easel_strength").setValue(sc["strength"])
    d.write("power-upscale-canvas.rgba", swap(doc.pixelData(0, 0, W, H)))
    before, docs = d.snapshot(doc), app.documents()
    d.w(QPushButton, "easel_upscale").click()
    done = yield wait(lambda: not d.busy(), d.spec["timeout"], "upscale")
    yield sleep(0.5)
    known = {x.rootNode().uniqueId().toString() for x in docs}
    new_docs = [x for x in app.documents() if x.rootNode().uniqueId().toString() not in known]
    record = {"done": done, "status": d.w_status(), "new_documents": len(new_docs),
              "original_unchanged": d.snapshot(doc) == before}
    if new_docs:
        up = new_docs[0]
        up.waitForDone()
        record["size"] = [up.width(), up.height()]
        record["layers"] = [n.name() for n in d.layers(up)]
        active = app.activeDocument()
        record["active_is_new"] = active is not None and active.rootNode().uniqueId() == up.rootNode().uniqueId()
        d.write("power-upscale-doc.rgba", swap(up.pixelData(0, 0, up.width(), up.height())))
        up.setModified(False)
        up.close()
        yield sleep(0.5)
        app.setActiveDocument(doc)
    res["upscale"] = record
    more.click()
    return res
