"""Easel > Upscale… and Easel > History…, and opening the dialog of any Easel command."""

from __future__ import annotations

import gi

gi.require_version("Gimp", "3.0")
import easel_jobs  # noqa: E402
from easel_pixels import CallingError, EaselError, insert_results, open_as_new_image, visible_composite  # noqa: E402
from gi.repository import Gimp, GObject  # noqa: E402
from shared import editing  # noqa: E402

HISTORY_LIMIT = 30


def open_dialog(procedure, config, command, fields, power, note: str = ""):
    """Show the command's dialog; the Dialog after OK, None after Cancel.

    The server's ``welcome`` fills the drop-downs (models, LoRAs, sketch guide models) and hides
    what the server does not offer; unreachable, the fields stay plain text. History first fetches
    the server's list of recent results (an unreachable server is an error then). ``note``: a line
    shown under the fields (the image's control layers). Use as Control Layer asks no server."""
    from easel_ui import Dialog, SettingsDialog

    title = f"Easel: {command.label.replace('_', '')}"
    if command.kind in ("control", "region"):
        return SettingsDialog(procedure, config, title).run()
    if not (config.get_property("url") or "").strip():
        config.set_property("url", easel_jobs.resolve_url(""))
    url = easel_jobs.resolve_url(config.get_property("url"))
    token = easel_jobs.resolve_token(config, url)
    if command.kind == "history":
        entries = easel_jobs.run_work(url, lambda client, _progress: editing.fetch_history(client, HISTORY_LIMIT),
                                      token=token, with_progress=False)
        if not entries:
            raise EaselError(f"the server at {url} keeps no results yet: generate something first")
        dialog = Dialog(procedure, config, title, list(fields), history=entries)
    else:
        def ask_again() -> dict | None:  # the dialog's refresh button: the URL and token as typed now
            now = easel_jobs.resolve_url(config.get_property("url"))
            return easel_jobs.welcome(now, token=easel_jobs.resolve_token(config, now))

        welcome = easel_jobs.welcome(url, token=token)
        dialog = Dialog(procedure, config, title, list(fields), power=list(power), welcome=welcome,
                        refresh=ask_again, note=note)
    if dialog.run():
        return dialog
    dialog.destroy()
    return None


def run_upscale(image, config, params_url, dialog, run_mode):
    """Upscale the visible image by 2 or 4 (tiled, refined at low strength) into a new image."""
    params, url = params_url
    width, height = image.get_width(), image.get_height()
    planned = editing.plan_upscale(visible_composite(image, (0, 0, width, height)), width, height, params,
                                   config.get_property("factor"), upscaler=config.get_property("upscaler") or "")
    problem = editing.check_request(planned)
    if problem:
        raise CallingError(problem)
    result = easel_jobs.generate(url, planned, dialog, easel_jobs.resolve_token(config, url))
    if result is None:
        return None
    new = open_as_new_image(result, image, params.prompt or "upscale")
    if run_mode == Gimp.RunMode.INTERACTIVE:
        Gimp.Display.new(new)
        Gimp.displays_flush()
    easel_jobs.remember_server(url, config)
    return [GObject.Value(Gimp.Image, new)]


def run_history(image, config, dialog):
    """Add the layers of a stored result (``job``; empty: the newest) at their offsets. From the
    dialog, a stored upscale opens as a new image, as it did when it was made."""
    url = easel_jobs.resolve_url(config.get_property("url"))
    job = (config.get_property("job") or "").strip()

    def work(client, on_progress):
        wanted = job
        if not wanted:
            newest = editing.fetch_history(client, 1)
            if not newest:
                raise editing.ClientError(f"the server at {url} keeps no results yet: generate something first")
            wanted = newest[0]["job"]
        return editing.fetch_result(client, wanted, on_progress)

    result = easel_jobs.run_work(url, work, token=easel_jobs.resolve_token(config, url), job=job or None,
                                 dialog=dialog)
    if result is None:
        return None
    prompt = str(result.parameters.get("prompt", ""))
    if result.parameters.get("mode") == "upscale" and dialog is not None:
        Gimp.Display.new(open_as_new_image(result, image, prompt or "upscale"))
    else:
        insert_results(image, result, prompt)
    easel_jobs.remember_server(url, config)
    return []
