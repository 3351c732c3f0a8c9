"""Talking to the server from GIMP: settings, the welcome, and running a job while GIMP stays alive.

A job runs on a worker thread (``editing.ClientTask``); the plug-in's main thread waits here,
feeding GIMP's progress bar (and the dialog's, when there is one) from the server's events.

When the URL is on this machine and nothing answers there, the job first starts the server recorded
in easel-gimp.json (``server_command`` + ``server_args``, written by ``easel install-plugin gimp``;
``editing.ServerManager``). A plug-in process lives for one command, so the server outlives it: it
is started with ``--parent-pid`` = GIMP (it exits when GIMP quits) and ``--idle-exit`` (``IDLE_EXIT``
seconds without a client, ``server_idle_exit`` in the file), and the next command finds it running.
"""

from __future__ import annotations

import json
import os
import queue

import gi

gi.require_version("Gimp", "3.0")
from easel_pixels import CallingError, EaselError  # noqa: E402
from gi.repository import Gimp  # noqa: E402
from shared import editing  # noqa: E402

SETTINGS_FILE = "easel-gimp.json"  # in GIMP's profile: the last server URL that worked, tokens per URL, server
CLIENT_NAME = "easel-gimp"
IDLE_EXIT = 600  # seconds without a client after which a server GIMP started exits
SERVER_WHERE = "the Local server part of an Easel dialog"
_manager: editing.ServerManager | None = None


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
    """Merge ``values`` into the settings file, readable by this user only (it may hold tokens)."""
    data = {**load_settings(), **values}
    path = _settings_path()
    try:
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)
        os.chmod(path, 0o600)  # a file written by an older version may be world-readable
    except OSError:
        pass  # settings are a convenience; never fail a run over them


def resolve_url(text: str | None) -> str:
    return editing.resolve_url(text, dict(os.environ), load_settings().get("url"))


def typed_token(config) -> str:
    """The dialog's Server token field (CallingError when it cannot be a token)."""
    token = (config.get_property("token") or "").strip()
    problem = editing.check_token(token)
    if problem:
        raise CallingError(problem)
    return token


def resolve_token(config, url: str) -> str | None:
    """The token for ``url``: the field, else $EASEL_TOKEN, else the one saved for that URL."""
    return editing.resolve_token(typed_token(config), dict(os.environ), load_settings().get("tokens"), url)


def remember_server(url: str, config) -> None:
    """After a run that worked: the URL, and the token typed for it (one from $EASEL_TOKEN is never written)."""
    values: dict = {"url": url}
    typed = typed_token(config)
    if typed:
        values["tokens"] = editing.remember_token(load_settings().get("tokens"), url, typed)
    save_settings(**values)


def server_settings() -> editing.ServerSettings:
    """How to start the local server: the recorded command, its arguments, on or off, idle time."""
    return editing.ServerSettings.from_strings(load_settings(), idle_exit=IDLE_EXIT)


def server_manager() -> editing.ServerManager:
    """This plug-in process's launcher; the server it starts watches GIMP (this process's parent)."""
    global _manager
    if _manager is None:
        _manager = editing.ServerManager("GIMP", parent_pid=os.getppid(), where=SERVER_WHERE, client_name=CLIENT_NAME)
    return _manager


# ----------------------------------------------------------------------------- jobs
def welcome(url: str, timeout: float = 3.0, token: str | None = None) -> dict | None:
    """The server's ``welcome`` (models, LoRAs, control models, refiner), or None when unreachable:
    the dialog then shows plain text fields."""
    try:
        client = editing.Client(url, timeout=timeout, client_name=CLIENT_NAME, token=token)
        data = client.connect()
        client.close()
        return data
    except Exception:  # only a convenience for the dialog
        return None


def check_edit_model(welcome: dict, model: str | None) -> None:
    """JobFailed (field model) unless ``model`` (empty: the server's default) is an instruction-edit model."""
    if not editing.is_edit_model(welcome, model):
        model = model or welcome.get("default_model")
        edits = editing.edit_models(welcome)
        offer = f": the server has {', '.join(edits)}" if edits else "; the server has none (serve FLUX.1 Kontext)"
        raise editing.JobFailed("unsupported_feature", f"Edit with Instruction needs an edit model (FLUX.1 Kontext) and "
                        f"{model!r} is not one; choose one in Model{offer}", field="model")


def run_work(url: str, work, *, token: str | None = None, job: str | None = None, dialog=None,
             with_progress: bool = True):
    """Run ``work(client, on_progress)`` on a worker thread and wait, pumping GIMP's progress (and the
    dialog's). Returns its value; None when cancelled; raises EaselError with the server's words."""
    events: queue.Queue = queue.Queue()

    def on_progress(info) -> None:
        events.put(("progress", info))

    task = editing.ClientTask(url, lambda client: work(client, on_progress), job=job, client_name=CLIENT_NAME,
                              token=token, on_done=lambda value, error: events.put(("done", (value, error))),
                              **server_manager().hooks(url, token, server_settings(), job, on_progress))
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


def generate(url: str, planned: editing.PlannedRequest, dialog=None, token: str | None = None, edit: bool = False):
    """Send a planned request (with its control guide, if any) and wait for the Result. LoRA names
    typed without ``.safetensors`` are completed from the server's list. ``edit``: the model must be an
    instruction-edit model (its welcome entry's features list ``edit``), else a plain-words error."""

    def work(client, on_progress):
        if edit:
            check_edit_model(client.welcome, planned.request.model)
        planned.request.loras = editing.match_loras(planned.request.loras, client.welcome.get("loras"))
        return editing.generate_work(planned, on_progress)(client)

    return run_work(url, work, token=token, job=planned.request.job, dialog=dialog)
