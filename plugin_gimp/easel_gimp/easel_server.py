"""The "Local server" part of the Easel dialogs: start a local server when needed, its command and
arguments (kept in easel-gimp.json, saved when the painter presses OK; easel_jobs starts it)."""

from __future__ import annotations

import gi

gi.require_version("Gtk", "3.0")
from gi.repository import Gtk  # noqa: E402
from shared import editing  # noqa: E402

TITLE = "Local server"


class ServerBox:
    """An expander with the server settings; ``settings()`` reads them back."""

    def __init__(self, settings: editing.ServerSettings):
        self.saved = settings
        self.widget = Gtk.Expander(label=TITLE)
        self.widget.set_name("easel-server")
        grid = Gtk.Grid(column_spacing=8, row_spacing=4, margin_top=4)
        self.autostart = Gtk.CheckButton(label="Start a local server when needed", active=settings.autostart)
        self.autostart.set_tooltip_text("When the server URL is on this machine and no server answers, start one "
                                        "with the command below")
        self.command = self._entry("easel-server-command", settings.command,
                                   "run `easel install-plugin gimp` to fill this in")
        self.args = self._entry("easel-server-args", settings.args, "e.g. --models-dir ~/models --model NAME")
        minutes = f"{settings.idle_exit // 60} minutes" if settings.idle_exit else "never"
        note = Gtk.Label(label=f"A server GIMP starts stops when GIMP quits, or after {minutes} unused. "
                               f"Its log: {editing.log_dir()}", xalign=0.0, wrap=True, max_width_chars=60)
        grid.attach(self.autostart, 0, 0, 2, 1)
        for row, (label, entry) in enumerate((("Command", self.command), ("Arguments", self.args)), start=1):
            grid.attach(Gtk.Label(label=label, xalign=0.0), 0, row, 1, 1)
            grid.attach(entry, 1, row, 1, 1)
        grid.attach(note, 0, 3, 2, 1)
        self.widget.add(grid)
        self.widget.set_expanded(not settings.command or not settings.autostart)
        self.widget.show_all()

    @staticmethod
    def _entry(name: str, text: str, placeholder: str) -> Gtk.Entry:
        entry = Gtk.Entry(text=text, hexpand=True, width_chars=40)
        entry.set_name(name)
        entry.set_placeholder_text(placeholder)
        return entry

    def settings(self) -> editing.ServerSettings:
        return editing.ServerSettings(self.command.get_text().strip(), self.args.get_text().strip(),
                                      self.autostart.get_active(), self.saved.idle_exit)

    def changed(self) -> bool:
        return self.settings() != self.saved
