"""The interactive side: the procedure dialog, with a progress bar and Cancel while the server works.

GIMP remembers the dialog's values between runs (the procedure's config is saved when a run
succeeds), so the fields come back as the painter left them. With the server's ``welcome``, the
model, LoRA and sketch-guide fields get a drop-down of what the server offers (the text stays
editable; the LoRAs are those of the chosen model's family), the model field a refresh button that
asks the server again, and the power features the server lacks are hidden.
"""

from __future__ import annotations

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("GimpUi", "3.0")
gi.require_version("Gtk", "3.0")
import easel_jobs  # noqa: E402
from easel_server import ServerBox  # noqa: E402
from gi.repository import Gdk, GimpUi, Gtk  # noqa: E402
from shared import editing  # noqa: E402

POWER_TITLE = "LoRAs, variations, sketch guide, refiner, second pass"
DEFAULTS = {"loras": "", "variation-seed": -1, "control-model": "", "refiner": False, "hires": True,
            "hires-strength": 0.0, "exact-size": False}


class Dialog:
    """A GimpUi.ProcedureDialog for one Easel command; stays open to show progress after OK."""

    def __init__(self, procedure, config, title: str, fields: list[str], power: list[str] = (),
                 welcome: dict | None = None, history: list[dict] | None = None, refresh=None, note: str = ""):
        GimpUi.init("easel")
        self.title, self.config = title, config
        self._welcome = welcome
        self.choices = editing.feature_choices(welcome) if welcome else None
        self._refresh = refresh  # () -> the server's welcome asked again, or None when unreachable
        self._menus: dict = {}  # field -> its drop-down menu
        self._wired: set = set()  # entries whose icon is connected
        self._follows_model = False
        self.dialog = GimpUi.ProcedureDialog.new(procedure, config, title)
        if history:
            self._history_list(history)
        # the prompt gets a multi-line text box, framed with its title (text boxes have no label)
        prompt = self.dialog.get_widget("prompt", Gtk.TextView.__gtype__) if "prompt" in fields else None
        if isinstance(prompt, Gtk.TextView):
            prompt.set_wrap_mode(Gtk.WrapMode.WORD_CHAR)
            prompt.set_size_request(380, 64)
            self.dialog.get_label("prompt-title", "Prompt", False, False)
            self.dialog.fill_frame("prompt-frame", "prompt-title", False, "prompt")
            fields = ["prompt-frame" if name == "prompt" else name for name in fields]
        if "factor" in fields:
            self._factor_radio()
        for name in power:  # what the server lacks is off, so no hidden value can fail a run
            if not self._offered(name) and name in DEFAULTS:
                config.set_property(name, DEFAULTS[name])
        power = self._power = [name for name in power if self._offered(name)]
        if power:
            self.dialog.fill_box("power-box", power)
            self.dialog.get_label("power-title", POWER_TITLE, False, False)
            expander = self.dialog.fill_expander("power", "power-title", False, "power-box")
            expander.set_expanded(any(config.get_property(n) != v for n, v in DEFAULTS.items() if n in power))
            fields.append("power")
        self.dialog.fill([*fields, "url", "token"])
        if note:  # the image's control layers
            label = Gtk.Label(label=note, xalign=0.0, wrap=True)
            label.set_margin_top(4)
            self.dialog.get_content_area().pack_start(label, False, False, 0)
            label.show()
        self._secret("token", f"none, ${editing.TOKEN_ENV}, or the one last used with this URL")
        if self.choices:
            self._drop_downs()
        hint = "Pick a result, then Insert as layers" if history else "Press OK to send the request to the Easel server"
        self.bar = Gtk.ProgressBar(show_text=True, text=hint)
        self.bar.set_margin_top(8)
        self.bar.set_margin_bottom(4)
        self.dialog.get_content_area().pack_end(self.bar, False, False, 0)
        self.bar.show()
        self.server = None if history else ServerBox(easel_jobs.server_settings())  # start one when needed
        if self.server is not None:
            self.dialog.get_content_area().pack_end(self.server.widget, False, False, 0)
        self._cancel = None

    # -- building ----------------------------------------------------------------------------
    def _offered(self, name: str) -> bool:
        """Hide what the server does not offer (everything shows when its welcome is unknown)."""
        c = self.choices
        if not c:
            return True
        if name == "loras":
            return bool(c["loras"])
        if name in ("control-model", "control-strength"):
            return bool(c["control_models"])
        if name == "refiner":
            return c["refiner"]
        return True

    def _factor_radio(self) -> None:
        store = GimpUi.IntStore()
        for value in (2, 4):
            store.set(store.append(), [GimpUi.IntStoreColumns.VALUE, GimpUi.IntStoreColumns.LABEL],
                      [value, f"×{value}"])
        self.dialog.get_int_radio("factor", store)

    def _secret(self, name: str, placeholder: str) -> None:
        """Show a token field as dots, like a password."""
        entry = self._entry(name)
        if entry is not None:
            entry.set_visibility(False)
            entry.set_placeholder_text(placeholder)

    def _entry(self, name: str):
        widget = self.dialog.get_widget(name, GimpUi.LabelEntry.__gtype__)
        return widget.get_entry() if isinstance(widget, GimpUi.LabelEntry) else None

    def _drop_downs(self) -> None:
        """A drop-down button in the model, LoRA and sketch-guide entries listing the server's choices;
        a refresh button in the model entry asks the server again (files added to its models folders)."""
        c, power = self.choices, self._power
        default = c["default_model"] or "the server's default"
        self._menu("model", [(f"(default: {default})", "")] + [(m, m) for m in c["models"]], f"{default} (default)")
        if "control-model" in power:
            self._menu("control-model", [("(none)", "")] + [(m, m) for m in c["control_models"]], "none")
        self._menu("upscaler", editing.upscaler_choices(self._welcome), "Lanczos")  # only Upscale… has the field
        if not self._follows_model:
            self._follows_model = True
            entry = self._entry("model")
            if self._refresh is not None and entry is not None:
                entry.set_icon_from_icon_name(Gtk.EntryIconPosition.PRIMARY, "view-refresh-symbolic")
                entry.set_icon_tooltip_text(Gtk.EntryIconPosition.PRIMARY, "Ask the server again: models and "
                                            "LoRAs added to its folders show up")
            self.config.connect("notify::model", self._model_changed)
        self._model_changed()

    def _model_changed(self, *_args) -> None:
        """The LoRA list follows the model (LoRAs of its family); the refiner only helps SDXL models."""
        model = (self.config.get_property("model") or "").strip() or None
        c = editing.feature_choices(self._welcome, model) if self._welcome else self.choices
        if "loras" in self._power and c["loras"]:
            self._menu("loras", [(name, name) for name in c["loras"]], f"none; e.g. {c['loras'][0]}:0.8", append=True)
        if "refiner" in self._power:
            check = self.dialog.get_widget("refiner", Gtk.CheckButton.__gtype__)
            check.set_sensitive((model or c["default_model"]) in set(c["refiner_models"]))
        # the model's own features (welcome): FLUX.1 has no negative prompt; the request leaves hidden ones out
        negative = self.dialog.get_widget("negative-prompt", GimpUi.LabelEntry.__gtype__)
        if isinstance(negative, GimpUi.LabelEntry) and c.get("negative_prompt") is not None:
            negative.set_visible(c["negative_prompt"])

    def refresh_choices(self) -> None:
        """Ask the server again and rebuild the drop-downs."""
        welcome = self._refresh() if self._refresh is not None else None
        if not welcome:
            self.bar.set_text("The server did not answer; the lists are unchanged")
            return
        self._welcome, self.choices = welcome, editing.feature_choices(welcome)
        self._drop_downs()
        problems = editing.ui.model_problems(welcome)
        self.bar.set_text(f"{len(self.choices['models'])} models" + (
            f"; cannot use {'; '.join(problems)}" if problems else ""))

    def _menu(self, name: str, items: list[tuple[str, str]], placeholder: str, append: bool = False) -> None:
        entry = self._entry(name)
        if entry is None or not items:
            return
        entry.set_placeholder_text(placeholder)
        menu = Gtk.Menu()
        for label, value in items:
            item = Gtk.MenuItem(label=label)
            item.connect("activate", self._pick, entry, value, append)
            menu.append(item)
        menu.show_all()
        self._menus[name] = menu  # keep it alive; the icon shows the newest one
        entry.set_icon_from_icon_name(Gtk.EntryIconPosition.SECONDARY, "pan-down-symbolic")
        entry.set_icon_tooltip_text(Gtk.EntryIconPosition.SECONDARY, "What the server offers")
        if name not in self._wired:
            self._wired.add(name)
            entry.connect("icon-press", self._icon_pressed, name)
        if not append:
            completion = Gtk.EntryCompletion(inline_completion=True, popup_completion=True)
            store = Gtk.ListStore(str)
            for _label, value in items:
                if value:
                    store.append([value])
            completion.set_model(store)
            completion.set_text_column(0)
            entry.set_completion(completion)

    def _icon_pressed(self, entry, position, event, name: str) -> None:
        if position == Gtk.EntryIconPosition.PRIMARY:
            self.refresh_choices()
        elif name in self._menus:
            self._menus[name].popup_at_widget(entry, Gdk.Gravity.SOUTH_WEST, Gdk.Gravity.NORTH_WEST, event)

    @staticmethod
    def _pick(_item, entry, value: str, append: bool) -> None:
        entry.set_text(editing.add_lora(entry.get_text(), value) if append else value)

    def _history_list(self, entries: list[dict]) -> None:
        """Recent results, newest first; picking one fills the Job field."""
        store = Gtk.ListStore(str, str)
        for entry in entries:
            store.append([entry["job"], editing.history_label(entry)])
        view = Gtk.TreeView(model=store, headers_visible=False)
        view.append_column(Gtk.TreeViewColumn("Result", Gtk.CellRendererText(), text=1))
        view.get_selection().connect("changed", self._history_pick)
        view.connect("row-activated", lambda *_a: self.dialog.response(Gtk.ResponseType.OK))  # Return, double-click
        scroll = Gtk.ScrolledWindow(hscrollbar_policy=Gtk.PolicyType.NEVER)
        scroll.set_size_request(520, 220)
        scroll.add(view)
        self.dialog.get_content_area().pack_start(scroll, True, True, 0)
        scroll.show_all()
        self.dialog.set_ok_label("_Insert as layers")
        view.get_selection().select_path(Gtk.TreePath.new_first())

    def _history_pick(self, selection) -> None:
        model, it = selection.get_selected()
        if it is not None:
            self.config.set_property("job", model[it][0])

    # -- running -----------------------------------------------------------------------------
    def run(self) -> bool:
        """Show the dialog; True when the painter pressed OK (then the server settings are saved)."""
        ok = bool(self.dialog.run())
        if ok and self.server is not None and self.server.changed():
            easel_jobs.save_settings(**self.server.settings().to_strings())
        return ok

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


class SettingsDialog:
    """A plain procedure dialog for a command that asks no server (Use as Control Layer…)."""

    def __init__(self, procedure, config, title: str):
        GimpUi.init("easel")
        self.dialog = GimpUi.ProcedureDialog.new(procedure, config, title)
        self.dialog.fill(None)

    def run(self) -> SettingsDialog | None:
        """Show it; itself after OK, None (and gone) after Cancel."""
        if self.dialog.run():
            return self
        self.destroy()
        return None

    def destroy(self) -> None:
        self.dialog.destroy()
