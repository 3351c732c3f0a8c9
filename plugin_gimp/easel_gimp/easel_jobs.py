"""Talking to the server from GIMP: settings, the welcome, and running a job while GIMP stays alive.

A job runs on a worker thread (``editing.ClientTask``); the plug-in's main thread waits here,
feeding GIMP's progress bar (and the dialog's, when there is one) from the server's events.
"""

from __future__ import annotations

import json
import os
import queue

import gi

gi.require_version("Gimp", "3.0")
from easel_pixels import EaselError  # noqa: E402
from gi.repository import Gimp  # noqa: E402
from shared import editing  # noqa: E402

SETTINGS_FILE = "easel-gimp.json"  # in GIMP's profile folder: the last server URL that worked
CLIENT_NAME = "easel-gimp"


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


def resolve_url(text: str | None) -> str:
    return editing.resolve_url(text, dict(os.environ), load_settings().get("url"))


# ----------------------------------------------------------------------------- jobs
def welcome(url: str, timeout: float = 3.0) -> dict | None:
    """The server's ``welcome`` (models, LoRAs, control models, refiner), or None when unreachable:
    the dialog then shows plain text fields."""
    try:
        client = editing.Client(url, timeout=timeout, client_name=CLIENT_NAME)
        data = client.connect()
        client.close()
        return data
    except Exception:  # noqa: BLE001 - only a convenience for the dialog
        return None


def run_work(url: str, work, *, job: str | None = None, dialog=None, with_progress: bool = True):
    """Run ``work(client, on_progress)`` on a worker thread and wait, pumping GIMP's progress (and the
    dialog's). Returns its value; None when cancelled; raises EaselError with the server's words."""
    events: queue.Queue = queue.Queue()

    def on_progress(info) -> None:
        events.put(("progress", info))

    task = editing.ClientTask(url, lambda client: work(client, on_progress), job=job, client_name=CLIENT_NAME,
                              on_done=lambda value, error: events.put(("done", (value, error))))
    if with_progress:
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
        if payload.stage == "upscale" and payload.message:
            text = f"{text} ({payload.message})"
        if with_progress:
            Gimp.progress_set_text(f"Easel: {text}")
            if percent > 0:
                Gimp.progress_update(percent / 100)
            else:
                Gimp.progress_pulse()
        if dialog is not None:
            dialog.progress(percent, text)
    if with_progress:
        Gimp.progress_end()
    value, error = outcome
    if error == "cancelled":
        return None
    if error:
        raise EaselError(error)
    return value


def generate(url: str, planned: editing.PlannedRequest, dialog=None):
    """Send a planned request (with its control guide, if any) and wait for the Result. LoRA names
    typed without ``.safetensors`` are completed from the server's list."""

    def work(client, on_progress):
        planned.request.loras = editing.match_loras(planned.request.loras, client.welcome.get("loras"))
        return editing.generate_work(planned, on_progress)(client)

    return run_work(url, work, job=planned.request.job, dialog=dialog)
