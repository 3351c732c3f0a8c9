"""Drives the Easel docker like a painter with no server running (tests/editors/test_krita_autostart.py).

Reads OUT/spec.json, writes OUT/result.json. Krita starts with EASEL_URL on a free port, as after a
fresh install; then, through the docker's widgets and the easel_generate action only:
  started  Generate starts the server (the recorded command), shows its start-up, adds the layer
  held     Connect to a port held by a plain TCP listener, then Generate: both say it is not Easel
  broken   a server command that no longer exists typed into Server settings; Connect (another
           free port), then Generate: both say so
  user     Connect to a server the test started itself; Generate uses it
A 50 ms timer measures the longest pause of Krita's event loop while each step waits. Then OUT/ready,
and Krita quits when OUT/quit appears.
"""

import os
import time

from krita import Krita
from PyQt5.QtCore import QObject
from PyQt5.QtWidgets import QCheckBox, QLabel, QLineEdit, QProgressBar, QPushButton

from .driver_common import DriverBase, wait
from .driver_common import register as register_driver


class Driver(DriverBase):
    interval_ms = 50

    def __init__(self, out):
        super().__init__(out, {"steps": {}})

    def layers(self, doc):
        return {n.uniqueId().toString(): n.name() for n in doc.rootNode().childNodes()}

    def step(self, name, doc, connect_url=None, timeout=30):
        """Connect to ``connect_url`` (when given), then Generate; wait until it has ended."""
        app = Krita.instance()
        connection, status = self.w(QLabel, "easel_connection"), self.w(QLabel, "easel_status")
        progress = self.w(QProgressBar, "easel_progress")
        rec = {}
        if connect_url:
            self.w(QLineEdit, "easel_url").setText(connect_url)
            self.runner.gap = 0.0
            t0 = time.monotonic()
            self.w(QPushButton, "easel_connect").click()
            yield wait(lambda: not connection.text().startswith("connecting"), timeout)
            rec.update(connection=connection.text(), connect_s=round(time.monotonic() - t0, 2),
                       connect_gap=round(self.runner.gap, 3))
        before = self.layers(doc)
        formats = []
        self.runner.gap = 0.0
        t0 = time.monotonic()
        app.action("easel_generate").trigger()
        started_busy = self.busy()

        def ended():
            text = progress.format()
            if not formats or formats[-1] != text:
                formats.append(text)
            return not self.busy()

        done = yield wait(ended, timeout)
        doc.waitForDone()
        rec.update(done=done, started_busy=started_busy, seconds=round(time.monotonic() - t0, 2),
                   gap=round(self.runner.gap, 3), status=status.text(), error_style=status.styleSheet(),
                   progress=formats, new_layers=[n for k, n in self.layers(doc).items() if k not in before],
                   server_state=self.w(QLabel, "easel_server_state").text())
        self.res["steps"][name] = rec
        self.save()

    def script(self):
        app = Krita.instance()
        spec, res = self.spec, self.res
        res["krita_version"] = app.version()
        win = app.activeWindow()
        win.qwindow().setGeometry(0, 0, 1600, 1000)
        doc = app.createDocument(spec["width"], spec["height"], "easel-autostart", "RGBA", "U8", "", 72.0)
        win.addView(doc)
        app.setActiveDocument(doc)
        yield wait(lambda: False, 1.0)
        dockers = [d for d in app.dockers() if d.objectName() == "easel_docker"]
        if not dockers:
            res["error"] = "no Easel docker"
            self.save()
            return
        self.docker = dockers[0]
        self.docker.setVisible(True)
        connection = self.w(QLabel, "easel_connection")
        yield wait(lambda: not connection.text().startswith("connecting"), 30)
        res["first_connection"] = connection.text()
        self.w(QPushButton, "easel_server_more").click()  # open Server settings
        command, args = self.w(QLineEdit, "easel_server_command"), self.w(QLineEdit, "easel_server_args")
        res["panel"] = {"command": command.text(), "args": args.text(),
                        "autostart": self.w(QCheckBox, "easel_autostart").isChecked(),
                        "state": self.w(QLabel, "easel_server_state").text()}
        prompt = self.docker.findChild(QObject, "easel_prompt")
        prompt.setPlainText(spec["prompt"])
        self.w(QCheckBox, "easel_seed_random").setChecked(False)
        self.w(QLineEdit, "easel_seed").setText(str(spec["seed"]))
        self.save()

        yield from self.step("started", doc, timeout=spec["start_timeout"])  # EASEL_URL: nothing there
        yield from self.step("held", doc, connect_url=spec["held_url"])
        command.setText(spec["broken_command"])
        yield from self.step("broken", doc, connect_url=spec["url2"])
        yield from self.step("user", doc, connect_url=spec["user_url"])
        res["ok"] = True
        self.save()
        self.show_only_easel()
        yield wait(lambda: False, 1.0)
        self.write("ready", "1")
        yield wait(lambda: os.path.exists(os.path.join(self.out, "quit")), spec["quit_wait"])
        res["quit_at"] = time.time()
        self.quit_krita()


def register(out):
    register_driver(Driver(out))
