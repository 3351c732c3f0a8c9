#!/usr/bin/env python3
"""Easel for GIMP 3: Filters > Easel > Generate…, Image from Sketch…, Regenerate Selection…,
Edit with Instruction…, Expand Canvas…, Upscale…, History…, Use as Control Layer…, Make Control Layer…, Use as Region….

Each command is a PDB procedure (``easel-generate``, ``easel-image-from-sketch``,
``easel-regenerate-selection``, ``easel-edit``, ``easel-expand``, ``easel-upscale``, ``easel-history``, ``easel-control-layer``,
``easel-make-control-layer``, ``easel-region-layer``) whose arguments are the dialog's fields, so scripts and
batch mode can run it NONINTERACTIVE. Layers marked as control layers (easel_controls.py) steer the generating
ones; layers marked as regions (easel_regions.py) give their paint a prompt of its own. The request goes to a local
Easel server; results come back as new layers at the offsets the server gives, in one undo step
(an upscale opens as a new image). Install with ``easel install-plugin gimp``, which bundles the
shared client (``shared/``) and websockets (``vendor/``) next to this file.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass

HERE = os.path.dirname(os.path.realpath(__file__))
for _path in (os.path.join(HERE, "vendor"), HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import gi  # noqa: E402

gi.require_version("Gimp", "3.0")
import easel_controls  # noqa: E402
import easel_jobs  # noqa: E402
import easel_more  # noqa: E402
import easel_regions  # noqa: E402
from easel_pixels import (  # noqa: E402
    CallingError,
    EaselError,
    GimpDocument,
    check_image,
    insert_results,
)
from gi.repository import Gimp, GLib, GObject  # noqa: E402
from shared import editing  # noqa: E402
from shared.protocol import MAX_EXPAND, request_fields  # noqa: E402

MENU = "<Image>/Filters/Easel"
RW = GObject.ParamFlags.READWRITE
Status = Gimp.PDBStatusType


@dataclass(frozen=True)
class Command:
    label: str
    blurb: str
    kind: str  # "generate" | "sketch" | "selection" | "edit" | "expand" | "upscale" | "history" | "control" | "make-control"
    strength: float = 1.0  # default strength (an edit: below 1, so the picture is sent; edit models leave it unused)


COMMANDS = {
    "easel-generate": Command(
        "_Generate…", "Paint a new layer from the prompt, the size of the image", "generate"),
    "easel-image-from-sketch": Command(
        "Image from _Sketch…", "Repaint what the image shows (all visible layers) following the prompt; "
        "lower strength keeps more of the sketch", "sketch", 0.6),
    "easel-regenerate-selection": Command(
        "_Regenerate Selection…", "Repaint the selected area (soft edges blend) following the prompt, "
        "with the surroundings as context", "selection"),
    "easel-edit": Command(
        "_Edit with Instruction…", "Edit what the image shows as the prompt says (\"make it night\") with an edit "
        "model (FLUX.1 Kontext); with a selection only the selection changes, its surroundings as context", "edit",
        0.5),
    "easel-expand": Command(
        "E_xpand Canvas…", "Grow the canvas by the given margins and paint them from the prompt, continuing "
        "what the image shows (outpainting); the old pixels stay", "expand"),
    "easel-upscale": Command(
        "_Upscale…", "Upscale what the image shows by 2 or 4 into a new image, letting the model add detail "
        "tile by tile", "upscale", 0.35),
    "easel-history": Command(
        "_History…", "Add the layers of a recent result the server keeps (its history) to the image", "history"),
    "easel-control-layer": Command(
        "Use as _Control Layer…", "Mark the selected layers as control layers (kind, strength, steps) that guide "
        "Generate, Image from Sketch and Regenerate Selection; they are left out of the picture sent", "control"),
    "easel-make-control-layer": Command(
        "_Make Control Layer…", "Let the server make a control layer (edges, depth or segmentation) from what the "
        "image shows (the selection's bounds, if any)", "make-control"),
    "easel-region-layer": Command(
        "Use as _Region…", "Mark the selected layers as regions: where a layer has paint, Generate, Image from Sketch "
        "and Regenerate Selection add its prompt to theirs", "region"),
}
GENERATING = ("generate", "sketch", "selection", "edit", "expand")
MARGINS = ("left", "top", "right", "bottom")  # easel-expand's arguments: the request's expand, in its order
MAIN_FIELDS = ("prompt", "negative-prompt", "strength", "steps", "guidance", "seed", "batch", "model")
POWER_FIELDS = ("loras", "variation-seed", "variation-strength", "control-model", "control-strength", "refiner",
                "hires", "hires-strength", "exact-size")
UPSCALE_FIELDS = ("prompt", "factor", "upscaler", "strength", "steps", "seed", "model")


def fields_of(command: Command) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The dialog's main fields and its power-feature fields (the server URL comes last)."""
    if command.kind == "upscale":
        return UPSCALE_FIELDS, ()
    if command.kind == "history":
        return ("job",), ()
    if command.kind == "control":
        return ("kind", "strength", "start", "end", "enabled"), ()
    if command.kind == "make-control":
        return ("kind", "strength"), ()
    if command.kind == "region":
        return ("prompt", "negative-prompt", "enabled"), ()
    extra = {"selection": ("inpaint-mode",), "expand": MARGINS}.get(command.kind, ())
    main = tuple(n for n in MAIN_FIELDS if not (n == "strength" and command.kind in ("generate", "edit", "expand")))
    return (*main, *extra), POWER_FIELDS


# ----------------------------------------------------------------------------- one run
def read_config(config, command: Command) -> tuple[editing.Params, str]:
    get = config.get_property
    if command.kind == "upscale":  # no negative prompt, guidance or batch: the model's defaults, one image
        negative, guidance, batch = "", -1.0, 1
    else:
        negative, guidance, batch = get("negative-prompt") or "", get("guidance"), get("batch")
    strength = get("strength") if command.kind in ("sketch", "selection", "upscale") else command.strength
    params = editing.params_from_ui(get("prompt") or "", negative, strength, get("steps"), guidance, get("seed"),
                                    batch, get("model") or "")
    return params, easel_jobs.resolve_url(get("url"))


def read_features(config, command: Command | None = None) -> editing.Features:
    get = config.get_property
    kind = command.kind if command is not None else ""
    try:
        return editing.features_from_ui(get("loras") or "", get("variation-seed"), get("variation-strength"),
                                        get("control-model") or "", get("control-strength"), get("refiner"),
                                        second_pass=get("hires"), hires_strength=get("hires-strength"),
                                        exact_size=get("exact-size"),
                                        inpaint_mode=get("inpaint-mode") if kind == "selection" else "",
                                        expand=[get(m) for m in MARGINS] if kind == "expand" else None)
    except ValueError as exc:
        raise CallingError(str(exc)) from None


def plan(image, command: Command, params: editing.Params, features: editing.Features,
         use_controls: bool = True, use_regions: bool = True) -> editing.PlannedRequest:
    """Build the request from what the image shows (``editing.build_request``). Generate and Image from
    Sketch leave the selection alone; Regenerate Selection needs one. The control layers steer (unless
    ``use_controls`` is off) and are never part of the picture sent; the region layers give their paint their
    prompts (unless ``use_regions`` is off) and stay part of the picture."""
    doc = GimpDocument(image)
    if command.kind == "selection" and doc.selection_box() is None and features.inpaint_mode != editing.BACKGROUND:
        raise CallingError("Regenerate Selection needs a selection: select the area to repaint first "
                           "(Selection mode Background works on the whole image without one)")
    controls = [c for _layer, c in easel_controls.control_layers(image)]
    if not use_controls:
        controls = [dataclasses.replace(c, enabled=False) for c in controls]
    regions = [r for _layer, r in easel_regions.region_layers(image)] if use_regions else []
    try:
        return editing.build_request(doc, params, features, use_selection=command.kind in ("selection", "edit"),
                                     controls=controls, regions=regions)
    except ValueError as exc:
        raise CallingError(str(exc)) from None


def run_generation(image, config, command: Command, dialog):
    params, url = read_config(config, command)
    token = easel_jobs.resolve_token(config, url)
    features = read_features(config, command)
    if command.kind == "expand" and not features.expand:
        raise CallingError("Expand Canvas needs a margin: set left, top, right or bottom to a number of pixels")
    planned = plan(image, command, params, features, config.get_property("control-layers"),
                   config.get_property("region-layers"))
    result = easel_jobs.generate(url, planned, dialog, token, edit=command.kind == "edit")
    if result is None:
        return None
    image.undo_group_start()  # growing the canvas and the new layers: one undo step
    try:
        if planned.request.expand:  # grow first (the old pixels keep their place), then place the layers in it
            growth = editing.grown_canvas(image.get_width(), image.get_height(), planned.request.expand)
            image.resize(growth.width, growth.height, growth.dx, growth.dy)
            for res in result.images:
                res.x, res.y = growth.place(res.x, res.y)
        insert_results(image, result, params.prompt)
    finally:
        image.undo_group_end()
    easel_jobs.remember_server(url, config)
    return []


def run(procedure, run_mode, image, drawables, config, _data):
    command = COMMANDS[procedure.get_name()]
    dialog = None
    try:
        check_image(image)
        if run_mode == Gimp.RunMode.INTERACTIVE:
            if command.kind == "control":
                easel_controls.prefill(config, drawables)
            if command.kind == "region":
                easel_regions.prefill(config, drawables)
            fields, power = fields_of(command)
            note = easel_controls.summary(image) if command.kind in GENERATING else ""
            if note:
                fields = (*fields, "control-layers")
            regions = easel_regions.summary(image) if command.kind in GENERATING else ""
            if regions:
                note, fields = "\n".join(x for x in (note, regions) if x), (*fields, "region-layers")
            dialog = easel_more.open_dialog(procedure, config, command, fields, power, note)
            if dialog is None:
                return procedure.new_return_values(Status.CANCEL, GLib.Error())
        if command.kind == "control":
            values = easel_controls.run_use(image, drawables, config)
        elif command.kind == "region":
            values = easel_regions.run_use(image, drawables, config)
        elif command.kind == "make-control":
            values = easel_controls.run_make(image, config, dialog)
        elif command.kind == "upscale":
            values = easel_more.run_upscale(image, config, read_config(config, command), dialog, run_mode)
        elif command.kind == "history":
            values = easel_more.run_history(image, config, dialog)
        else:
            values = run_generation(image, config, command, dialog)
        if values is None:
            return procedure.new_return_values(Status.CANCEL, GLib.Error())
    except CallingError as exc:
        return _fail(procedure, Status.CALLING_ERROR, str(exc))
    except EaselError as exc:
        return _fail(procedure, Status.EXECUTION_ERROR, str(exc))
    except Exception as exc:  # a plug-in should report, not crash with a traceback
        return _fail(procedure, Status.EXECUTION_ERROR, f"unexpected error: {exc!r}")
    finally:
        if dialog is not None:
            dialog.destroy()
    out = procedure.new_return_values(Status.SUCCESS, GLib.Error())
    for i, value in enumerate(values, start=1):
        out.remove(i)
        out.insert(i, value)
    return out


def _fail(procedure, status, message: str):
    return procedure.new_return_values(status, GLib.Error(f"Easel: {message}"))


# ----------------------------------------------------------------------------- registration
def add_arguments(proc, command: Command) -> None:
    kind = command.kind
    generating = kind in GENERATING
    if kind == "control":
        easel_controls.add_use_arguments(proc)
        return
    if kind == "region":
        easel_regions.add_use_arguments(proc)
        return
    if kind == "make-control":
        easel_controls.add_make_arguments(proc)
    elif kind == "history":
        proc.add_string_argument("job", "_Job", "Job id of a stored result (empty: the newest)", "", RW)
    else:
        if kind == "upscale":
            proc.add_int_argument("factor", "Factor", "Upscale by 2 or 4", 2, 4, 2, RW)
            proc.add_string_argument("upscaler", "U_pscaler", "Upscaler model on the server (ESRGAN & co.) that "
                                     "enlarges before the refine (empty: Lanczos)", "", RW)
        proc.add_string_argument("prompt", "Prompt", "What to paint", "", RW)  # a text box: no mnemonic
        if generating:
            proc.add_string_argument("negative-prompt", "_Negative prompt", "What to avoid", "", RW)
        proc.add_double_argument("strength", "_Strength", "How much detail the model adds per tile (0: the "
                                 "plain upscale; 0.2–0.4 keeps the picture)" if kind == "upscale" else
                                 "1.0 paints anew; lower keeps more of the image", *declared("strength")[:2],
                                 command.strength, RW)
        proc.add_int_argument("steps", "S_teps", "Denoising steps (0: the model's default)", 0, 500, 0, RW)
        if generating:
            proc.add_double_argument("guidance", "_Guidance", "Prompt guidance scale (-1: the model's default)",
                                     -1.0, declared("guidance")[1], -1.0, RW)
        proc.add_int_argument("seed", "S_eed", "Random seed (-1: a new one each run)", -1, 2**31 - 1, -1, RW)
        if generating:
            low, high, default = declared("batch")  # the server may allow fewer: its error names its limit
            proc.add_int_argument("batch", "_Batch", "How many results (one layer each)", low, high, default, RW)
        proc.add_string_argument("model", "_Model", "Model id on the server (empty: the server's default)", "", RW)
        if kind == "selection":
            proc.add_choice_argument("inpaint-mode", "Selection _mode", editing.selection_mode_help(), _modes(),
                                     "auto", RW)
        if kind == "expand":
            for name in MARGINS:
                proc.add_int_argument(name, f"{name.capitalize()} (px)", f"Pixels to add on the {name}", 0,
                                      MAX_EXPAND, 0, RW)
        if generating:
            add_power_arguments(proc)
    proc.add_string_argument("url", "Server _URL",
                             f"Easel server (empty: ${editing.URL_ENV}, else the last one used, else "
                             f"{editing.DEFAULT_SERVER_URL})", "", RW)
    proc.add_string_argument("token", "Server t_oken",
                             f"The token the server requires when started with --token (empty: ${editing.TOKEN_ENV}, "
                             "else the one last used with this URL)", "", RW)
    if generating:
        proc.add_boolean_argument("control-layers", "Use the _control layers", "Let the image's control layers "
                                  "(Use as Control Layer…) guide the result; off: they are only left out", True, RW)
        proc.add_boolean_argument("region-layers", "Use the _region layers", "Let the image's region layers (Use as "
                                  "Region…) add their prompts where they have paint; off: the base prompt everywhere",
                                  True, RW)
    if kind == "upscale":
        proc.add_image_return_value("new-image", "New image", "The upscaled image (shown in a new window when "
                                    "run interactively)", True, RW)


def _modes() -> Gimp.Choice:
    """The selection modes (``inpaint_mode``), in the editors' order."""
    choice = Gimp.Choice.new()
    for i, mode in enumerate(editing.SELECTION_MODES):
        choice.add(mode, i, mode.capitalize(), "")
    return choice


def declared(name: str) -> tuple[float, float, float]:
    """(min, max, default) of request field ``name`` as the protocol declares it."""
    field = request_fields()[name]
    return field.spec.low, field.spec.high, field.default


def add_power_arguments(proc) -> None:
    """LoRAs, variations, the sketch guide, the refiner (docs/features.md), the second pass and exact size
    (docs/imaging.md); defaults change nothing."""
    proc.add_string_argument("loras", "_LoRAs", "LoRAs the server offers, with weights: name:0.8, other:0.5 "
                             "(empty: none)", "", RW)
    proc.add_int_argument("variation-seed", "_Variation seed", "Blend this seed's noise into the seed's, to "
                          "explore around a result (-1: off)", -1, 2**31 - 1, -1, RW)
    proc.add_double_argument("variation-strength", "Variation s_trength", "0: the seed's result, 1: the "
                             "variation seed's", *declared("variation_strength"), RW)
    proc.add_string_argument("control-model", "S_ketch guide model", "ControlNet id on the server (empty: no "
                             "guide). The visible image guides the result, as white lines on black (a dark-on-"
                             "light sketch is inverted)", "", RW)
    proc.add_double_argument("control-strength", "Guide str_ength", "How closely the result follows the "
                             f"sketch guide ({request_fields()['control_strength'].range_text()})",
                             *declared("control_strength"), RW)
    proc.add_boolean_argument("refiner", "SDXL re_finer", "Let the server's SDXL refiner do the last steps "
                              "(SDXL models, when the server has a refiner)", False, RW)
    proc.add_boolean_argument("hires", "Second _pass", "Images well above the model's size: generate at its size, "
                              "upscale, then refine at full size (off: one pass, resampled)", True, RW)
    proc.add_double_argument("hires-strength", "Second pass st_rength", "How much the second pass repaints (0: the "
                             "model family's default)", *declared("hires_strength")[:2], 0.0, RW)
    proc.add_boolean_argument("exact-size", "E_xact size", "Run the model at the image's (or region's) own size "
                              "instead of its native area: faster for small images, no second pass", False, RW)


class EaselPlugIn(Gimp.PlugIn):
    def do_set_i18n(self, _name):
        return False  # English only, no message catalogs

    def do_query_procedures(self):
        return list(COMMANDS)

    def do_create_procedure(self, name):
        command = COMMANDS[name]
        proc = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, run, None)
        proc.set_image_types("*")
        mask = Gimp.ProcedureSensitivityMask
        proc.set_sensitivity_mask(mask.DRAWABLE | mask.DRAWABLES if command.kind in ("control", "region") else
                                  mask.ALWAYS)
        proc.set_menu_label(command.label)
        proc.add_menu_path(MENU)
        what = {"upscale": " The result opens as a new image.", "control": " Nothing else changes.",
                "region": " Nothing else changes.", "make-control": " The new layer is added on top."}.get(command.kind, " Results are added as new layers.")
        proc.set_documentation(command.blurb, command.blurb + "." + what, name)
        proc.set_attribution("Easel", "Easel contributors", "2026")
        add_arguments(proc, command)
        return proc


if __name__ == "__main__":
    Gimp.main(EaselPlugIn.__gtype__, sys.argv)
