"""The live painting part of the GUI self-test (a generator driven by driver.Runner).

On a document of its own: turn Live on (``easel_live``), paint a stroke with setPixelData (a dab
every ``dab_s``), wait until the live status says up to date, change the prompt, wait again,
press Apply (``easel_live_apply``), turn Live off. Dumps the live layer and the canvas without it
after each phase, so the test can ask the server for the same frame; records the plugin's own
numbers (frames, rate, latency) and the driver's stroke-end-to-final-frame time.
"""

import hashlib
import re
import time

from krita import Krita
from PyQt5.QtWidgets import QCheckBox, QLabel, QLineEdit, QPlainTextEdit, QPushButton

LIVE = "Easel Live"


def live_nodes(doc):
    return [n for n in doc.rootNode().childNodes() if n.name() == LIVE]


def frames(text):
    m = re.search(r"(\d+) frames?", text)
    return int(m.group(1)) if m else 0


def run(d, spec):
    """``d`` is the Driver (widgets, files, sleep/wait helpers); yields wait conditions."""
    from .driver import sleep, swap, wait
    from .driver_common import painted_document

    app = Krita.instance()
    W, H = spec["width"], spec["height"]
    doc, sketch = painted_document(spec, "easel-live", "Live sketch")
    root = doc.rootNode()
    yield sleep(0.5)
    d.set_params(spec["params"])
    d.w(QCheckBox, "easel_seed_random").setChecked(spec["params"].get("seed_random", False))
    toggle, apply = d.w(QPushButton, "easel_live"), d.w(QPushButton, "easel_live_apply")
    status = d.w(QLabel, "easel_live_status")
    rec = {"apply_enabled_before": apply.isEnabled()}
    d.runner.timer.setInterval(20)  # finer timing of the waits below
    calm = {"since": None}

    def settled(changed_from=None):
        """Up to date for 0.4 s in a row (so the last change was seen), and the live layer changed."""
        nodes = live_nodes(doc)
        if not nodes or not status.text().startswith("Live: up to date"):
            calm["since"] = None
            return False
        if changed_from is not None and digest(nodes[0]) == changed_from:
            return False
        calm["since"] = calm["since"] or time.time()
        return time.time() - calm["since"] >= 0.4

    def digest(node):
        return hashlib.sha1(bytes(node.pixelData(0, 0, W, H))).hexdigest()

    def dump(tag):
        """The live layer, and the canvas without it (Krita's own projection, the live layer hidden)."""
        node = live_nodes(doc)[0]
        d.write(f"live-{tag}-layer.rgba", swap(node.pixelData(0, 0, W, H)))
        node.setVisible(False)
        doc.refreshProjection()
        d.write(f"live-{tag}-canvas.rgba", swap(doc.pixelData(0, 0, W, H)))
        node.setVisible(True)
        doc.refreshProjection()
        b = node.bounds()
        return {"status": status.text(), "bounds": [b.x(), b.y(), b.width(), b.height()], "locked": node.locked(),
                "count": len(live_nodes(doc)), "digest": digest(node), "prompt": d.w(QPlainTextEdit, "easel_prompt")
                .toPlainText()}

    if spec.get("dead_url"):  # a server that is down: said in plain words, in red, Live stays on
        url, connect = d.w(QLineEdit, "easel_url"), d.w(QPushButton, "easel_connect")
        good = url.text()
        url.setText(spec["dead_url"])
        connect.click()
        toggle.click()
        yield wait(lambda: "cannot reach" in status.text(), 20, "live: dead server")
        rec["dead"] = {"status": status.text(), "style": status.styleSheet(), "checked": toggle.isChecked(),
                       "layers": len(live_nodes(doc))}
        toggle.click()
        url.setText(good)
        connect.click()
        yield wait(lambda: d.w(QLabel, "easel_connection").text().startswith("connected"), 30, "reconnected")

    t0 = time.time()
    toggle.click()
    rec["checked"] = toggle.isChecked()
    calm["since"] = None
    ok = yield wait(settled, spec["timeout"], "live: first frame")
    rec["first_frame_s"] = round(time.time() - t0, 3)
    rec["first"] = dump("first") if ok else {"status": status.text()}
    if not ok:
        return rec

    # a stroke: one dab every dab_s, left to right, for stroke_s seconds, and on until min_frames frames
    # came during it (a loaded machine is slower; within the timeout)
    before_stroke = frames(status.text())
    stroke_start = time.time()
    color = bytes(spec["stroke_bgra"])
    sx, sy, size = spec["stroke"]
    i, seen = 0, {}  # frame count -> the status line that announced it (with that frame's latency)
    def stroking():
        elapsed = time.time() - stroke_start
        short = frames(status.text()) - before_stroke < spec.get("min_frames", 0)
        return elapsed < spec["stroke_s"] or (short and elapsed < spec["timeout"])

    while stroking():
        sketch.setPixelData(color * (size * size), sx + (i * 3) % (W - sx - size), sy + (i % 5), size, size)
        doc.refreshProjection()
        i += 1
        yield wait(lambda: seen.setdefault(frames(status.text()), status.text()) and False, spec["dab_s"], "dab")
    pen_up = time.time()
    during = frames(status.text()) - before_stroke
    calm["since"] = None
    ok = yield wait(lambda: settled(rec["first"]["digest"]), spec["timeout"], "live: stroke")
    rec["stroke"] = {"dabs": i, "seconds": round(pen_up - stroke_start, 3), "frames_during": during,
                     "fps_during": round(during / (pen_up - stroke_start), 2),
                     "pen_up_to_final_s": round((calm["since"] or time.time()) - pen_up, 3), "settled": ok,
                     "frame_latencies_ms": [int(m) for n, t in sorted(seen.items()) if n > before_stroke
                                            for m in re.findall(r"(\d+) ms", t)]}
    rec["after_stroke"] = dump("stroke")
    layers_before = {n.uniqueId().toString(): bytes(n.pixelData(0, 0, W, H)) for n in root.childNodes()
                     if n.name() != LIVE}

    # a new prompt (typed all at once): a new frame after the typing pause
    d.w(QPlainTextEdit, "easel_prompt").setPlainText(spec["prompt2"])
    calm["since"] = None
    ok = yield wait(lambda: settled(rec["after_stroke"]["digest"]), spec["timeout"], "live: prompt")
    rec["after_prompt"] = dump("prompt") if ok else {"status": status.text()}
    rec["apply_enabled"] = apply.isEnabled()

    # Apply: a normal layer holding the frame on show
    apply.click()
    doc.waitForDone()
    yield sleep(0.3)
    new = [n for n in root.childNodes() if n.uniqueId().toString() not in layers_before and n.name() != LIVE]
    names = [n.name() for n in root.childNodes()]
    rec["apply"] = {"names": names, "new": [n.name() for n in new], "types": [n.type() for n in new],
                    "locked": [n.locked() for n in new], "live_count": len(live_nodes(doc)),
                    "unchanged": all(bytes(n.pixelData(0, 0, W, H)) == layers_before[n.uniqueId().toString()]
                                     for n in root.childNodes() if n.uniqueId().toString() in layers_before),
                    "main_status": d.w(QLabel, "easel_status").text()}
    if new:
        d.write("live-applied.rgba", swap(new[0].pixelData(0, 0, W, H)))

    # Live off: the live layer goes, the applied one stays
    toggle.click()
    doc.waitForDone()
    yield sleep(0.3)
    rec["off"] = {"checked": toggle.isChecked(), "names": [n.name() for n in root.childNodes()],
                  "status": status.text()}
    app.action("edit_undo").trigger()  # what Ctrl+Z does right after Live off
    doc.waitForDone()  # Krita 5.3 may finish the undo later: poll, with a deadline
    yield wait(lambda: [n.name() for n in root.childNodes()][-1:] == [LIVE], 10, "live: undo")
    rec["off"]["after_undo"] = [n.name() for n in root.childNodes()]
    d.runner.timer.setInterval(100)
    doc.setModified(False)
    return rec
