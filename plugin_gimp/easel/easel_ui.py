"""The interactive side: the procedure dialog, with a progress bar and Cancel while the server works.

GIMP remembers the dialog's values between runs (the procedure's config is saved when a run
succeeds), so the fields come back as the painter left them.
"""

from __future__ import annotations

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("GimpUi", "3.0")
gi.require_version("Gtk", "3.0")
from gi.repository import GimpUi, Gtk  # noqa: E402


class Dialog:
    """A GimpUi.ProcedureDialog for one Easel command; stays open to show progress after OK."""

    def __init__(self, procedure, config, title: str, fields: list[str]):
        GimpUi.init("easel")
        self.title = title
        self.dialog = GimpUi.ProcedureDialog.new(procedure, config, title)
        # the prompt gets a multi-line text box, framed with its title (text boxes have no label)
        prompt = self.dialog.get_widget("prompt", Gtk.TextView.__gtype__)
        if isinstance(prompt, Gtk.TextView):
            prompt.set_wrap_mode(Gtk.WrapMode.WORD_CHAR)
            prompt.set_size_request(380, 64)
            self.dialog.get_label("prompt-title", "Prompt", False, False)
            self.dialog.fill_frame("prompt-frame", "prompt-title", False, "prompt")
            fields = ["prompt-frame" if name == "prompt" else name for name in fields]
        self.dialog.fill(fields)
        self.bar = Gtk.ProgressBar(show_text=True, text="Press OK to send the request to the Easel server")
        self.bar.set_margin_top(8)
        self.bar.set_margin_bottom(4)
        self.dialog.get_content_area().pack_end(self.bar, False, False, 0)
        self.bar.show()
        self._cancel = None

    def run(self) -> bool:
        """Show the dialog; True when the painter pressed OK."""
        return bool(self.dialog.run())

    def start(self, cancel) -> None:
        """Lock the fields and turn Cancel (and closing the window) into cancelling the job."""
        self._cancel = cancel
        keep = [self.bar, self.dialog.get_widget_for_response(Gtk.ResponseType.CANCEL)]
        self._lock(self.dialog, [w for w in keep if w is not None])
        self.dialog.connect("response", self._on_response)
        self.dialog.connect("delete-event", self._on_delete)
        self.bar.set_text("Connecting to the Easel server…")
        self.pump()

    def _lock(self, widget, keep) -> None:
        """Make everything insensitive but ``keep`` (the progress bar and Cancel)."""
        for child in widget.get_children():
            if child in keep:
                continue
            if isinstance(child, Gtk.Container) and any(k.is_ancestor(child) for k in keep):
                self._lock(child, keep)
            else:
                child.set_sensitive(False)

    def progress(self, percent: int, text: str) -> None:
        if percent > 0:
            self.bar.set_fraction(percent / 100)
        else:
            self.bar.pulse()
        self.bar.set_text(text)
        self.dialog.set_title(f"{self.title} – {text}")

    def pump(self) -> None:
        """Let GTK draw and handle clicks (called from the plug-in's wait loop)."""
        while Gtk.events_pending():
            Gtk.main_iteration_do(False)

    def destroy(self) -> None:
        self.dialog.destroy()
        self.pump()

    def _on_response(self, _dialog, response) -> None:
        if response != Gtk.ResponseType.OK and self._cancel:
            self.bar.set_text("Cancelling…")
            self._cancel()

    def _on_delete(self, *_args) -> bool:
        if self._cancel:
            self._cancel()
        return True  # keep the window until the job has really ended
