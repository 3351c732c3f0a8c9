#!/usr/bin/env python3
"""Easel for GIMP 3: Filters > Easel > Generate…, Image from Sketch…, Regenerate Selection….

Each command is a PDB procedure (``easel-generate``, ``easel-image-from-sketch``,
``easel-regenerate-selection``) with the arguments prompt, negative-prompt, strength, steps,
guidance, seed, batch, model and url, so scripts and batch mode can run it NONINTERACTIVE.
The request goes to a local Easel server; results come back as new layers at the offsets the
server gives, in one undo step. Install with ``easel install-plugin gimp``, which bundles the
shared client (``shared/``) and websockets (``vendor/``) next to this file.
"""

from __future__ import annotations

import json
import os
import queue
import sys
from dataclasses import dataclass

HERE = os.path.dirname(os.path.realpath(__file__))
for _path in (os.path.join(HERE, "vendor"), HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import gi  # noqa: E402

gi.require_version("Gimp", "3.0")
from easel_pixels import (  # noqa: E402
    CallingError,
    EaselError,
    check_image,
    insert_results,
    selection_box,
    selection_mask,
    visible_composite,
)
from gi.repository import Gimp, GLib, GObject  # noqa: E402
from shared import editing  # noqa: E402

MENU = "<Image>/Filters/Easel"
SETTINGS_FILE = "easel-gimp.json"  # in GIMP's profile folder: the last server URL that worked
RW = GObject.ParamFlags.READWRITE
Status = Gimp.PDBStatusType


@dataclass(frozen=True)
class Command:
    label: str
    blurb: str
    kind: str  # "generate" | "sketch" | "selection"
    strength: float  # default strength


COMMANDS = {
    "easel-generate": Command(
        "_Generate…", "Paint a new layer from the prompt, the size of the image", "generate", 1.0),
    "easel-image-from-sketch": Command(
        "Image from _Sketch…", "Repaint what the image shows (all visible layers) following the prompt; "
        "lower strength keeps more of the sketch", "sketch", 0.6),
    "easel-regenerate-selection": Command(
        "_Regenerate Selection…", "Repaint the selected area (soft edges blend) following the prompt, "
        "with the surroundings as context", "selection", 1.0),
}


# ----------------------------------------------------------------------------- settings
def _settings_path() -> str:
    return os.path.join(Gimp.directory(), SETTINGS_FILE)


def load_settings() -> dict:
    try:
        with open(_settings_path(), encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def save_settings(**values) -> None:
    data = {**load_settings(), **values}
    try:
        with open(_settings_path(), "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)
    except OSError:
        pass  # settings are a convenience; never fail a run over them


# ----------------------------------------------------------------------------- one run
def read_config(config, command: Command) -> tuple[editing.Params, str]:
    get = config.get_property
    strength = 1.0 if command.kind == "generate" else get("strength")
    params = editing.params_from_ui(get("prompt") or "", get("negative-prompt") or "", strength, get("steps"),
                                    get("guidance"), get("seed"), get("batch"), get("model") or "")
    url = editing.resolve_url(get("url"), dict(os.environ), load_settings().get("url"))
    return params, url


def plan(image, command: Command, params: editing.Params) -> editing.PlannedRequest:
    """Read what the command needs from the image and build the request."""
    width, height = image.get_width(), image.get_height()
    if command.kind == "generate":
        mode, region = editing.TXT2IMG, None
    elif command.kind == "sketch":
        mode, region = editing.read_plan(width, height, None, params.strength)
    else:
        box = selection_box(image)
        if box is None:
            raise CallingError("Regenerate Selection needs a selection: select the area to repaint first")
        mode, region = editing.read_plan(width, height, box, params.strength)
    state = editing.EditorState(width, height)
    if region is not None:
        state.region = tuple(region)
        state.rgba = visible_composite(image, state.region)
        if mode == editing.INPAINT:
            state.selection = selection_mask(image, state.region)
    planned = editing.plan_request(state, params)
    problem = editing.check_request(planned)
    if problem:
        raise CallingError(problem)
    return planned


def generate(url: str, planned: editing.PlannedRequest, dialog=None):
    """Run the request on a worker thread; feed GIMP's progress (and the dialog's) from here."""
    events: queue.Queue = queue.Queue()
    task = editing.GenerationTask(url, planned, image_format="rgba", client_name="easel-gimp",
                                  on_progress=lambda info: events.put(("progress", info)),
                                  on_done=lambda result, error: events.put(("done", (result, error))))
    Gimp.progress_init("Easel: connecting to the server…")
    if dialog is not None:
        dialog.start(task.cancel)
    task.start()
    outcome = None
    while outcome is None:
        if dialog is not None:
            dialog.pump()
        try:
            kind, payload = events.get(timeout=0.03 if dialog is not None else 0.2)
        except queue.Empty:
            continue
        if kind == "done":
            outcome = payload
            continue
        percent, text = editing.progress_text(payload)
        Gimp.progress_set_text(f"Easel: {text}")
        if percent > 0:
            Gimp.progress_update(percent / 100)
        else:
            Gimp.progress_pulse()
        if dialog is not None:
            dialog.progress(percent, text)
    Gimp.progress_end()
    result, error = outcome
    if error == "cancelled":
        return None
    if error:
        raise EaselError(error)
    return result


def run(procedure, run_mode, image, _drawables, config, _data):
    command = COMMANDS[procedure.get_name()]
    dialog = None
    try:
        check_image(image)
        if run_mode == Gimp.RunMode.INTERACTIVE:
            from easel_ui import Dialog

            if not (config.get_property("url") or "").strip():
                config.set_property("url", editing.resolve_url("", dict(os.environ), load_settings().get("url")))
            fields = [n for n in ARGUMENTS if not (n == "strength" and command.kind == "generate")]
            dialog = Dialog(procedure, config, f"Easel: {command.label.replace('_', '')}", fields)
            if not dialog.run():
                return procedure.new_return_values(Status.CANCEL, GLib.Error())
        params, url = read_config(config, command)
        planned = plan(image, command, params)
        result = generate(url, planned, dialog)
        if result is None:
            return procedure.new_return_values(Status.CANCEL, GLib.Error())
        insert_results(image, result.images, params.prompt)
        save_settings(url=url)
    except CallingError as exc:
        return _fail(procedure, Status.CALLING_ERROR, str(exc))
    except EaselError as exc:
        return _fail(procedure, Status.EXECUTION_ERROR, str(exc))
    except Exception as exc:  # noqa: BLE001 - a plug-in should report, not crash with a traceback
        return _fail(procedure, Status.EXECUTION_ERROR, f"unexpected error: {exc!r}")
    finally:
        if dialog is not None:
            dialog.destroy()
    return procedure.new_return_values(Status.SUCCESS, GLib.Error())


def _fail(procedure, status, message: str):
    return procedure.new_return_values(status, GLib.Error(f"Easel: {message}"))


# ----------------------------------------------------------------------------- registration
ARGUMENTS = ("prompt", "negative-prompt", "strength", "steps", "guidance", "seed", "batch", "model", "url")


def add_arguments(proc, command: Command) -> None:
    proc.add_string_argument("prompt", "Prompt", "What to paint", "", RW)  # a text box: no mnemonic
    proc.add_string_argument("negative-prompt", "_Negative prompt", "What to avoid", "", RW)
    proc.add_double_argument("strength", "_Strength", "1.0 paints anew; lower keeps more of the image",
                             0.0, 1.0, command.strength, RW)
    proc.add_int_argument("steps", "S_teps", "Denoising steps (0: the model's default)", 0, 500, 0, RW)
    proc.add_double_argument("guidance", "_Guidance", "Prompt guidance scale (-1: the model's default)",
                             -1.0, 100.0, -1.0, RW)
    proc.add_int_argument("seed", "S_eed", "Random seed (-1: a new one each run)", -1, 2**31 - 1, -1, RW)
    proc.add_int_argument("batch", "_Batch", "How many results (one layer each)", 1, 16, 1, RW)
    proc.add_string_argument("model", "_Model", "Model id on the server (empty: the server's default)", "", RW)
    proc.add_string_argument("url", "Server _URL",
                             f"Easel server (empty: ${editing.URL_ENV}, else the last one used, else "
                             f"{editing.DEFAULT_SERVER_URL})", "", RW)


class EaselPlugIn(Gimp.PlugIn):
    def do_set_i18n(self, _name):
        return False  # English only, no message catalogs

    def do_query_procedures(self):
        return list(COMMANDS)

    def do_create_procedure(self, name):
        command = COMMANDS[name]
        proc = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, run, None)
        proc.set_image_types("*")
        proc.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.ALWAYS)
        proc.set_menu_label(command.label)
        proc.add_menu_path(MENU)
        proc.set_documentation(command.blurb, command.blurb + ". Results are added as new layers.", name)
        proc.set_attribution("Easel", "Easel contributors", "2026")
        add_arguments(proc, command)
        return proc


if __name__ == "__main__":
    Gimp.main(EaselPlugIn.__gtype__, sys.argv)
