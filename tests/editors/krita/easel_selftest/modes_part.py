"""The docker's selection mode, Expand and upscaler model in a real Krita: Background with nothing selected
repaints everything but the sketch's red box (the server's background model finds it; the new layer is then
hidden), Remove takes the red box off the plain background (a selection around it, the mode picker at Remove), Expand grows the canvas by the
spec's right margin, Upscale ×2 runs the server's upscaler model.

Run by driver.py on its main document, through public widgets (objectName) and actions only. Writes the
canvas, mask, layer and projection dumps (RGBA) for tests/editors/test_krita_modes.py, which sends the same
requests directly and compares pixel for pixel.
"""

import hashlib

from krita import Krita, Selection
from PyQt5.QtWidgets import QComboBox, QPushButton, QSlider, QSpinBox

from .driver import sleep, swap, wait
from .power_part import _generate


def _pick(d, name, value):
    box = d.w(QComboBox, name)
    box.setCurrentIndex(box.findData(value))
    return box.currentData()


def _hashes(d, doc, W, H):
    """Each layer's pixels over the old canvas (W x H), by id."""
    return {n.uniqueId().toString(): hashlib.sha1(bytes(n.pixelData(0, 0, W, H))).hexdigest() for n in d.layers(doc)}


def run(d, doc, spec):
    app = Krita.instance()
    W, H = doc.width(), doc.height()
    res = d.res["modes"] = {}
    more = d.w(QPushButton, "easel_more")
    more.click()
    yield sleep(0.3)

    # Background: nothing selected, the mode picker at Background; the whole canvas is sent
    d.set_params(spec["background"])
    res["background_picked"] = _pick(d, "easel_inpaint_mode", "background")
    res["background_unselected"] = doc.selection() is None
    d.write("modes-background-canvas.rgba", swap(doc.pixelData(0, 0, W, H)))

    def replace() -> None:
        app.action("easel_generate").trigger()
        res["background_words"] = d.w_status()  # what the docker says while the job runs

    res["background"] = yield from _generate(d, doc, "background", W, H, replace)
    for node in d.layers(doc):  # hidden again: the steps below work on the sketch
        if node.name() in {layer["name"] for layer in res["background"]["layers"]}:
            node.setVisible(False)
    doc.refreshProjection()
    doc.waitForDone()
    yield sleep(0.3)

    # Remove: a selection around the red box, the mode picker at Remove
    d.set_params(spec["remove"])
    res["mode_picked"] = _pick(d, "easel_inpaint_mode", "remove")
    sel = Selection()
    sel.select(*spec["selection"], 255)
    doc.setSelection(sel)
    doc.waitForDone()
    yield sleep(0.3)
    d.write("modes-remove-canvas.rgba", swap(doc.pixelData(0, 0, W, H)))
    d.write("modes-remove-mask.gray", bytes(doc.selection().pixelData(0, 0, W, H)))
    res["remove"] = yield from _generate(d, doc, "remove", W, H, lambda: app.action("easel_generate").trigger())
    d.write("modes-remove-projection.rgba", swap(doc.pixelData(0, 0, W, H)))
    _pick(d, "easel_inpaint_mode", "auto")
    app.action("deselect").trigger()
    doc.waitForDone()
    yield sleep(0.3)
    d.save()

    # Expand: the right margin, the Expand button; the document grows, the layer lands in it
    d.set_params(spec["expand"])
    d.w(QSpinBox, "easel_expand_right").setValue(spec["right"])
    d.write("modes-expand-canvas.rgba", swap(doc.pixelData(0, 0, W, H)))
    before, old = d.snapshot(doc), _hashes(d, doc, W, H)
    d.w(QPushButton, "easel_expand").click()
    started = d.busy()
    done = yield wait(lambda: not d.busy(), d.spec["timeout"], "expand")
    doc.waitForDone()
    yield sleep(0.3)
    GW, GH = doc.width(), doc.height()
    new = [n for n in d.layers(doc) if n.uniqueId().toString() not in before]
    record = {"done": done, "started_busy": started, "status": d.w_status(), "size": [GW, GH], "layers": [],
              "old_unchanged": {k: v == _hashes(d, doc, W, H).get(k) for k, v in old.items()}}
    for i, node in enumerate(new):
        fname = f"modes-expand-layer{i}.rgba"
        d.write(fname, swap(node.pixelData(0, 0, GW, GH)))
        record["layers"].append({"name": node.name(), "file": fname})
    d.write("modes-expand-projection.rgba", swap(doc.pixelData(0, 0, GW, GH)))
    d.w(QSpinBox, "easel_expand_right").setValue(0)
    res["expand"] = record
    d.save()

    # Upscale ×2 with the server's upscaler model: a new document
    sc = spec["upscale"]
    d.set_params(sc)
    d.w(QSlider, "easel_strength").setValue(sc["strength"])
    res["upscaler_picked"] = _pick(d, "easel_upscaler", spec["upscaler"])
    d.write("modes-upscale-canvas.rgba", swap(doc.pixelData(0, 0, GW, GH)))
    docs = {x.rootNode().uniqueId().toString() for x in app.documents()}
    d.w(QPushButton, "easel_upscale").click()
    done = yield wait(lambda: not d.busy(), d.spec["timeout"], "upscale")
    yield sleep(0.5)
    new_docs = [x for x in app.documents() if x.rootNode().uniqueId().toString() not in docs]
    record = {"done": done, "status": d.w_status(), "new_documents": len(new_docs)}
    if new_docs:
        up = new_docs[0]
        up.waitForDone()
        record["size"] = [up.width(), up.height()]
        d.write("modes-upscale-doc.rgba", swap(up.pixelData(0, 0, up.width(), up.height())))
        up.setModified(False)
        up.close()
        yield sleep(0.5)
        app.setActiveDocument(doc)
    res["upscale"] = record
    more.click()
    return res
