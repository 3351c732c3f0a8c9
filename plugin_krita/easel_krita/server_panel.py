"""The docker's "Server settings" group: start a local server when needed, its command and arguments.

The values live in kritarc's ``[easel]`` group (``local_server``), written as they are typed, so the
next Generate uses them; ``easel install-plugin krita [--serve-args "ARGS"]`` fills them in.
"""

from __future__ import annotations

from . import local_server
from .qt import QCheckBox, QFormLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget, named
from .shared.editing.server_command import ServerSettings

TOGGLE = ("Server settings ▸", "Server settings ▾")


class ServerPanel(QWidget):
    """A toggle and the group it shows; ``refresh`` follows the server Krita started."""

    def __init__(self, controller):
        super().__init__()
        self.controller = controller
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.toggle = named(QPushButton(TOGGLE[0]), "easel_server_more", "How Easel starts a server on this machine")
        self.toggle.setCheckable(True)
        self.toggle.setFlat(True)
        outer.addWidget(self.toggle)
        self.group = QWidget()
        form = QFormLayout(self.group)
        form.setContentsMargins(0, 0, 0, 0)
        self.autostart = named(QCheckBox("Start a local server when needed"), "easel_autostart",
                               "When the server URL is on this machine and no server answers, Generate starts one "
                               "(it stops when Krita quits)")
        form.addRow(self.autostart)
        self.command = named(QLineEdit(), "easel_server_command", "The command that starts the Easel server")
        self.command.setPlaceholderText("run `easel install-plugin krita` to fill this in")
        form.addRow("Command", self.command)
        self.args = named(QLineEdit(), "easel_server_args", "Extra `easel serve` arguments (the URL's port is added)")
        self.args.setPlaceholderText("e.g. --models-dir ~/models --model NAME")
        form.addRow("Arguments", self.args)
        self.state = named(QLabel(), "easel_server_state")
        self.state.setWordWrap(True)
        form.addRow(self.state)
        self.stop = named(QPushButton("Stop the server Krita started"), "easel_server_stop")
        form.addRow(self.stop)
        outer.addWidget(self.group)
        self.group.setVisible(False)

        settings = local_server.load_settings()
        self.autostart.setChecked(settings.autostart)
        self.command.setText(settings.command)
        self.args.setText(settings.args)
        self.toggle.toggled.connect(self._show)
        self.autostart.toggled.connect(self._save)
        self.command.textChanged.connect(self._save)
        self.args.textChanged.connect(self._save)
        self.stop.clicked.connect(self._stop)
        controller.changed.connect(self.refresh)
        self.refresh()

    def _show(self, shown: bool) -> None:
        self.group.setVisible(shown)
        self.toggle.setText(TOGGLE[shown])

    def _save(self, *_args) -> None:
        local_server.save_settings(ServerSettings(self.command.text().strip(), self.args.text().strip(),
                                                  self.autostart.isChecked()))

    def _stop(self) -> None:
        self.controller.server.stop()
        self.controller.connect_server()

    def refresh(self) -> None:
        if self.controller.closing:
            return
        text = self.controller.server.describe()
        if self.state.text() != text:
            self.state.setText(text)
        self.stop.setEnabled(self.controller.server.manager.server is not None)
