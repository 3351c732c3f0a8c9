"""A reference layer in the docker on whatever model the server gives references to (test_krita_flux.py:
FLUX.1 through FLUX Redux): Add a picture smaller than the canvas as a reference layer of ``spec["kind"]``, refine
the canvas, switch it off in the list, refine again.

Run by driver.py on its main document. Writes the reference's pixels and the canvases sent (RGBA dumps) for
the test, which asks the same server the same requests directly and compares pixel for pixel.
"""

from krita import Krita
from PyQt5.QtCore import Qt
from PyQt5.QtWidgets import QListWidget

from .controls_part import add, hidden_canvas, rows
from .driver import sleep, swap
from .power_part import _generate


def run(d, doc, spec):
    app = Krita.instance()
    W, H = doc.width(), doc.height()
    res = d.res["reference"] = {}
    app.action("deselect").trigger()  # the selection scenario's selection would make every job an inpaint
    doc.waitForDone()
    painted = doc.activeNode()
    x, y, w, h = spec["box"]
    ref = doc.createNode("Ref", "paintlayer")
    doc.rootNode().addChildNode(ref, painted)
    ref.setPixelData(bytes((23 * i % 256, 40, 255 - 5 * i % 256, 255)[c] for i in range(w * h) for c in range(4)),
                     x, y, w, h)
    doc.refreshProjection()
    yield sleep(0.3)
    d.write("reference-ref.rgba", swap(ref.pixelData(x, y, w, h)))
    add(d, doc, ref, spec["kind"], spec["strength"], 0.0, 1.0)
    yield sleep(0.3)
    res["added"] = {"rows": rows(d)}
    doc.setActiveNode(painted)  # results go right above the active layer
    d.set_params(spec["params"])
    generate = lambda: app.action("easel_generate").trigger()  # noqa: E731
    hidden_canvas(d, doc, [ref], "reference-canvas-on.rgba")
    res["on"] = yield from _generate(d, doc, "reference-on", W, H, generate)
    box = d.w(QListWidget, "easel_control_list")
    for i in range(box.count()):
        if box.item(i).text().startswith("Ref"):
            box.item(i).setCheckState(Qt.CheckState.Unchecked)
    yield sleep(0.3)
    hidden_canvas(d, doc, [ref], "reference-canvas-off.rgba")  # the first result is part of it now
    res["off"] = yield from _generate(d, doc, "reference-off", W, H, generate)
    res["off"]["rows"] = rows(d)
    d.log(f"reference: {d.w_status()}")
    return res
