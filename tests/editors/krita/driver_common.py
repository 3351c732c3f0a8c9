"""What both test-only Krita plugins (easel_selftest/, easel_autostart/) share: the Qt-timer runner,
wait/sleep conditions, result files, widget look-up, painted documents, quitting and registration.

Copied next to each plugin's driver.py when the test installs it (imported as ``.driver_common``).
"""

import json
import os
import time
import traceback

from krita import Krita
from PyQt5.QtCore import QObject, QTimer
from PyQt5.QtWidgets import QPushButton


def wait(cond, timeout, label=""):
    return cond, time.monotonic() + timeout, label


def sleep(seconds):
    end = time.monotonic() + seconds
    return wait(lambda: time.monotonic() >= end, seconds + 1, "sleep")


class Runner(QObject):
    """Runs a generator of wait conditions (see ``wait``) on a Qt timer, so Krita's GUI keeps running;
    ``gap`` is the longest time between two timer ticks since the last reset (a frozen GUI shows here)."""

    def __init__(self, gen, on_error, interval_ms=100):
        super().__init__()
        self.gen, self.on_error, self.pending, self.interval_ms = gen, on_error, None, interval_ms
        self.gap, self.last = 0.0, time.monotonic()
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.tick)

    def start(self):
        self.timer.start(self.interval_ms)
        self.advance(None)

    def tick(self):
        now = time.monotonic()
        self.gap, self.last = max(self.gap, now - self.last), now
        if self.pending is None:
            return
        cond, deadline, _ = self.pending
        try:
            ok = bool(cond())
        except Exception:
            ok = False
        if ok or now > deadline:
            self.advance(ok)

    def advance(self, value):
        try:
            self.pending = self.gen.send(value)
        except StopIteration:
            self.pending = None
            self.timer.stop()
        except Exception:
            self.pending = None
            self.timer.stop()
            self.on_error(traceback.format_exc())


def painted_document(spec, title, sketch_name):
    """A new W x H document (spec) in the active window: the background filled, a sketch layer with
    a filled box on it, made active. Returns (doc, sketch)."""
    app = Krita.instance()
    W, H = spec["width"], spec["height"]
    doc = app.createDocument(W, H, title, "RGBA", "U8", "", 72.0)
    app.activeWindow().addView(doc)
    app.setActiveDocument(doc)
    root = doc.rootNode()
    background = root.childNodes()[0]
    background.setPixelData(bytes(spec["background_bgra"]) * (W * H), 0, 0, W, H)
    sketch = doc.createNode(sketch_name, "paintlayer")
    root.addChildNode(sketch, background)
    x, y, w, h = spec["sketch_box"]
    sketch.setPixelData(bytes(spec["sketch_bgra"]) * (w * h), x, y, w, h)
    doc.setActiveNode(sketch)
    doc.refreshProjection()
    return doc, sketch


class DriverBase:
    """OUT/spec.json in, OUT/result.json (``self.res``) out; the subclass's ``script()`` yields waits."""

    interval_ms = 100

    def __init__(self, out, res):
        self.out = out
        self.spec = json.load(open(os.path.join(out, "spec.json")))
        self.res = res
        self.runner = None

    def write(self, name, data):
        path = os.path.join(self.out, name)
        with open(path + ".tmp", "wb" if isinstance(data, bytes) else "w") as fh:
            fh.write(data)
        os.replace(path + ".tmp", path)

    def save(self):
        self.write("result.json", json.dumps(self.res, indent=1, default=str))

    def fail(self, tb):
        self.res["error"] = tb
        self.save()

    def w(self, cls, name):
        widget = self.docker.findChild(cls, name)
        if widget is None:
            raise RuntimeError(f"no {cls.__name__} named {name!r} in the Easel docker")
        return widget

    def busy(self):
        return self.w(QPushButton, "easel_cancel_button").isEnabled()

    def show_only_easel(self):
        """For the screenshot: room for the Easel docker next to the layers."""
        for d in Krita.instance().dockers():
            if d.objectName() not in ("easel_docker", "KisLayerBox"):
                d.setVisible(False)

    def quit_krita(self):
        """Every document marked unmodified (no save prompt), the result saved, then File > Quit."""
        app = Krita.instance()
        for d in app.documents():
            d.setModified(False)
        self.save()
        app.action("file_quit").trigger()


def register(driver):
    """Start ``driver.script()`` on a Runner two seconds after Krita's main window appears."""

    def begin():
        try:
            driver.runner = Runner(driver.script(), driver.fail, driver.interval_ms)
            driver.runner.start()
        except Exception:
            driver.fail(traceback.format_exc())

    Krita.instance().notifier().windowCreated.connect(lambda: QTimer.singleShot(2000, begin))
    return driver
