"""Drives Krita's GUI like a painter: a document, the Easel docker's widgets, the easel_generate action.

Reads OUT/spec.json (written by tests/editors/krita/gui_run.py), writes OUT/result.json and raw
pixel dumps (RGBA, whole canvas) for every scenario, OUT/ready when the screenshot may be
taken; then waits for OUT/quit, starts one more job and quits Krita while it runs.
The spec's "parts" picks some of PARTS (test_krita_flux.py: the controls offered and the three uses).
Only public widgets (found by objectName) and actions are used, never the plugin's internals.
"""

import hashlib
import os
import time

from krita import Krita, Selection
from PyQt5.QtCore import QObject
from PyQt5.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QLabel,
    QLineEdit,
    QListWidget,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSlider,
    QSpinBox,
)

from .driver_common import DriverBase, painted_document, sleep, wait
from .driver_common import register as register_driver

__all__ = ["Driver", "register", "sleep", "swap", "wait"]  # live_part, power_part import these
# What a run does, in this order; "offered" (the controls shown for the model) runs only when asked for.
PARTS = ("dead", "uses", "cancel", "apply", "power", "live", "quit")


def swap(data):
    """BGRA <-> RGBA, written out here so the test does not trust the plugin's own swap."""
    data = bytes(data)
    out = bytearray(data)
    out[0::4], out[2::4] = data[2::4], data[0::4]
    return bytes(out)


class Driver(DriverBase):
    def __init__(self, out):
        super().__init__(out, {"events": [], "scenarios": [], "ok": False})

    def log(self, text):
        self.res["events"].append(f"{time.time():.2f} {text}")

    def fail(self, tb):
        self.res["error"] = tb
        self.save()

    # -- helpers ------------------------------------------------------------------------------
    def layers(self, doc):
        """Non-mask nodes of the stack (a selection adds a "Selection Mask" node: ignored)."""
        found = []

        def walk(node):
            for child in node.childNodes():
                if not child.type().endswith("mask"):
                    found.append(child)
                    walk(child)

        walk(doc.rootNode())
        return found

    def snapshot(self, doc):
        w, h = doc.width(), doc.height()
        return {n.uniqueId().toString(): {"name": n.name(), "sha1": hashlib.sha1(bytes(n.pixelData(0, 0, w, h))).hexdigest()}
                for n in self.layers(doc)}

    def set_params(self, sc):
        self.w(QPlainTextEdit, "easel_prompt").setPlainText(sc["prompt"])
        self.w(QLineEdit, "easel_negative").setText(sc.get("negative", ""))
        self.w(QSlider, "easel_strength").setValue(sc["strength"])
        self.w(QSpinBox, "easel_steps").setValue(sc["steps"])
        guidance = self.w(QDoubleSpinBox, "easel_guidance")
        guidance.setValue(sc["guidance"] if sc.get("guidance") is not None else guidance.minimum())
        self.w(QCheckBox, "easel_seed_random").setChecked(False)
        self.w(QLineEdit, "easel_seed").setText(str(sc["seed"]))
        self.w(QSpinBox, "easel_batch").setValue(sc["batch"])

    def w_status(self):
        return self.w(QLabel, "easel_status").text()

    def wants(self, part):
        return part in self.spec.get("parts", PARTS)

    def offered(self):
        """Which of the docker's controls show for the chosen model (the More group open) and what the
        pickers list: the plugin hides what the model cannot use (editing.feature_choices)."""
        pick, control = self.w(QComboBox, "easel_lora_pick"), self.w(QComboBox, "easel_control_model")
        shown = {key: self.w(cls, name).isVisible() for key, cls, name in (
            ("panel", QPushButton, "easel_upscale"), ("negative_shown", QLineEdit, "easel_negative"),
            ("loras_shown", QLineEdit, "easel_loras"), ("control_shown", QComboBox, "easel_control_model"),
            ("refiner_shown", QCheckBox, "easel_refiner"), ("variation_shown", QLineEdit, "easel_variation_seed"))}
        return dict(shown, lora_pick=[pick.itemText(i) for i in range(pick.count())],
                    control_models=[control.itemText(i) for i in range(control.count())])

    # -- the script ---------------------------------------------------------------------------
    def script(self):
        app = Krita.instance()
        spec, res = self.spec, self.res
        res["krita_version"] = app.version()
        win = app.activeWindow()
        win.qwindow().setGeometry(0, 0, 1600, 1000)  # no window manager under Xvfb
        doc, _sketch = painted_document(spec, "easel-selftest", "Sketch")
        yield sleep(1.0)
        dockers = [d for d in app.dockers() if d.objectName() == "easel_docker"]
        res["docker_found"] = bool(dockers)
        if not dockers:
            return
        self.docker = dockers[0]
        self.docker.setVisible(True)
        self.docker.raise_()
        res["actions"] = {a: app.action(a) is not None for a in ("easel_generate", "easel_cancel")}
        res["widgets"] = {name: self.docker.findChild(QObject, name) is not None for name in spec["object_names"]}
        url, connection = self.w(QLineEdit, "easel_url"), self.w(QLabel, "easel_connection")
        res["url_field"] = url.text()
        ok = yield wait(lambda: connection.text().startswith("connected"), 60, "connected")
        model = self.w(QComboBox, "easel_model")
        res["connection"] = connection.text()
        res["models"] = [model.itemText(i) for i in range(model.count())]
        res["model"] = model.currentText()
        self.log(f"connected={ok}")
        if spec.get("only_live"):  # bench/live.py: the live part alone, then quit
            from . import live_part

            res["live"] = yield from live_part.run(self, spec["live"])
            self.quit_krita()
            return
        progress = self.w(QProgressBar, "easel_progress")
        preview = self.w(QLabel, "easel_preview")
        self.seen = []

        def on_progress(value):
            pixmap = preview.pixmap()
            self.seen.append((value, pixmap is not None and not pixmap.isNull()))

        progress.valueChanged.connect(on_progress)

        if self.wants("offered"):  # the controls the chosen model can use, and only those
            more = self.w(QPushButton, "easel_more")
            more.click()
            yield sleep(0.3)
            res["offered"] = self.offered()
            more.click()
        if self.wants("dead"):
            yield from self.server_down()
        if self.wants("uses"):
            for sc in spec["scenarios"]:
                res["scenarios"].append((yield from self.use(doc, sc)))
                self.save()
        if self.wants("cancel"):
            yield from self.cancel(doc)
        if self.wants("apply"):
            yield from self.apply_again(doc)
        if self.wants("power") and spec.get("power"):  # "More": LoRA + variation, History, guide, Upscale
            from . import power_part

            res["power"] = yield from power_part.run(self, doc, spec["power"])
            self.save()
        if self.wants("controls") and spec.get("controls"):  # control layers (asked for by test_krita_controls)
            from . import controls_part

            res["controls"] = yield from controls_part.run(self, doc, spec["controls"])
            self.save()
        if self.wants("reference") and spec.get("reference"):  # a reference layer (test_krita_flux)
            from . import reference_part

            res["reference"] = yield from reference_part.run(self, doc, spec["reference"])
            self.save()
        if self.wants("regions") and spec.get("regions"):  # regions (asked for by test_krita_regions)
            from . import regions_part

            res["regions"] = yield from regions_part.run(self, doc, spec["regions"])
            self.save()
        if self.wants("modes") and spec.get("modes"):  # selection modes, Expand, upscaler (test_krita_modes)
            from . import modes_part

            yield from modes_part.run(self, doc, spec["modes"])
            self.save()
        if self.wants("live") and spec.get("live"):  # on a document of its own
            from . import live_part

            res["live"] = yield from live_part.run(self, spec["live"])
            self.save()

        res["ok"] = all(s["done"] and s["new_layers"] for s in res["scenarios"])
        self.save()
        self.show_only_easel()
        yield sleep(0.5)
        self.write("ready", b"1")
        yield wait(lambda: os.path.exists(os.path.join(self.out, "quit")), spec["quit_wait"], "quit file")
        if self.wants("quit"):
            yield from self.quit_mid_job()
        else:
            self.quit_krita()

    def server_down(self):
        """A server that is down: the error shows in plain words; then back to the real one."""
        spec, res, app = self.spec, self.res, Krita.instance()
        url, connection, status = (self.w(QLineEdit, "easel_url"), self.w(QLabel, "easel_connection"),
                                   self.w(QLabel, "easel_status"))
        url.setText(spec["dead_url"])
        self.w(QPushButton, "easel_connect").click()
        yield wait(lambda: connection.text().startswith("not connected"), 20, "dead connection")
        res["dead_connection"] = connection.text()
        self.set_params(spec["scenarios"][0])
        app.action("easel_generate").trigger()
        yield wait(lambda: not self.busy(), 30, "dead generate")
        res["dead_status"] = status.text()
        res["dead_status_style"] = status.styleSheet()
        url.setText(spec["url"])
        self.w(QPushButton, "easel_connect").click()
        yield wait(lambda: connection.text().startswith("connected"), 30, "reconnected")

    def use(self, doc, sc):
        """One scenario (new image, refine, selection): set the widgets, Generate, record the new layers."""
        app, W, H = Krita.instance(), doc.width(), doc.height()
        status = self.w(QLabel, "easel_status")
        t0 = time.time()
        self.seen.clear()
        self.set_params(sc)
        if sc.get("selection"):
            sel = Selection()
            sel.select(*sc["selection"], 255)
            if sc.get("feather"):
                sel.feather(sc["feather"])
            doc.setSelection(sel)
            doc.waitForDone()
            yield sleep(0.3)
        before = self.snapshot(doc)
        self.write(f"{sc['name']}-canvas.rgba", swap(doc.pixelData(0, 0, W, H)))
        current = doc.selection()
        mask = bytes(current.pixelData(0, 0, W, H)) if current is not None else b""
        self.write(f"{sc['name']}-mask.gray", mask)
        active = doc.activeNode().name() if doc.activeNode() else None
        negative = self.w(QLineEdit, "easel_negative").text()
        self.log(f"{sc['name']}: generate")
        if sc.get("button"):
            self.w(QPushButton, "easel_generate_button").click()
        else:
            app.action("easel_generate").trigger()
        started_busy = self.busy()
        done = yield wait(lambda: not self.busy(), self.spec["timeout"], sc["name"])
        doc.waitForDone()
        after = self.snapshot(doc)
        new_nodes = [n for n in self.layers(doc) if n.uniqueId().toString() not in before]
        order = [n.uniqueId().toString() for n in self.layers(doc)]
        record = {
            "name": sc["name"], "done": done, "seconds": round(time.time() - t0, 2), "started_busy": started_busy,
            "status": status.text(), "active_before": active, "negative": negative,
            "mask_bytes": len(mask), "progress_seen": list(self.seen),
            "last_seed": self.w(QLabel, "easel_last_seed").text(),
            "button": self.w(QPushButton, "easel_generate_button").text(),  # "Edit" for an edit model
            "unchanged": {k: after.get(k) == v for k, v in before.items()},
            "stack": [n.name() for n in self.layers(doc)],
            "new_layers": [],
            "results_strip": self.w(QListWidget, "easel_results").count(),
        }
        for i, node in enumerate(new_nodes):
            b = node.bounds()
            fname = f"{sc['name']}-layer{i}.rgba"
            self.write(fname, swap(node.pixelData(0, 0, W, H)))
            parent = node.parentNode()
            record["new_layers"].append({
                "name": node.name(), "type": node.type(), "file": fname, "visible": node.visible(),
                "opacity": node.opacity(), "bounds": [b.x(), b.y(), b.width(), b.height()],
                "index": order.index(node.uniqueId().toString()),
                "parent_is_root": parent is not None and parent.parentNode() is None,
            })
        self.log(f"{sc['name']}: {len(new_nodes)} new layer(s), status {status.text()!r}")
        return record

    def cancel(self, doc):
        """Cancel: the job stops, nothing is added."""
        spec = self.spec
        self.set_params(dict(spec["scenarios"][0], steps=spec["long_steps"], batch=spec["long_batch"]))
        before = self.snapshot(doc)
        self.seen.clear()
        Krita.instance().action("easel_generate").trigger()
        running = yield wait(lambda: any(v > 0 for v, _ in self.seen), 30, "cancel: running")
        self.w(QPushButton, "easel_cancel_button").click()
        t0 = time.time()
        stopped = yield wait(lambda: not self.busy(), 30, "cancelled")
        self.res["cancel"] = {"running": running, "stopped": stopped, "seconds": round(time.time() - t0, 2),
                              "status": self.w_status(), "progress": [v for v, _ in self.seen],
                              "unchanged": self.snapshot(doc) == before}

    def apply_again(self, doc):
        """Apply again: the first result of the strip becomes a new layer; Ctrl+Z (edit_undo) removes it."""
        app, W, H = Krita.instance(), doc.width(), doc.height()
        before = self.snapshot(doc)
        strip = self.w(QListWidget, "easel_results")
        strip.setCurrentRow(0)
        self.w(QPushButton, "easel_apply_button").click()
        doc.waitForDone()
        yield sleep(0.3)
        applied = [n for n in self.layers(doc) if n.uniqueId().toString() not in before]
        if applied:
            self.write("apply-layer0.rgba", swap(applied[0].pixelData(0, 0, W, H)))
        self.res["apply_again"] = {"names": [n.name() for n in applied], "status": self.w_status(),
                                   "strip": strip.count()}
        app.action("edit_undo").trigger()
        doc.waitForDone()
        yield sleep(0.5)
        self.res["undo"] = {"stack": [n.name() for n in self.layers(doc)], "back_to_before": self.snapshot(doc) == before}

    def quit_mid_job(self):
        """Quit while a job runs: Krita must close cleanly and promptly."""
        spec = self.spec
        quit_sc = dict(spec["scenarios"][0], steps=spec["long_steps"], batch=spec["long_batch"], name="quit")
        self.set_params(quit_sc)
        self.seen.clear()
        Krita.instance().action("easel_generate").trigger()
        running = yield wait(lambda: self.busy() and any(v > 0 for v, _ in self.seen), 30, "job running")
        self.res["quit"] = {"job_running": running and self.busy(), "progress": list(self.seen)[-3:], "at": time.time()}
        self.log("file_quit")
        self.quit_krita()


def register(out):
    register_driver(Driver(out))
