"""The plugin's settings in kritarc (group ``easel``): the docker's last parameters, the server URL, the seed
field's text, and what local_server.py keeps about starting the server. GUI thread only: Krita's settings
are not for workers."""

from __future__ import annotations

from krita import Krita

from .shared import editing

SETTINGS_GROUP = "easel"


def read_setting(key: str, default: str = "") -> str:
    return Krita.instance().readSetting(SETTINGS_GROUP, key, default)


def write_setting(key: str, value: str) -> None:
    Krita.instance().writeSetting(SETTINGS_GROUP, key, value)


def load_params() -> editing.Params:
    """The parameters saved by the last session (defaults where none were saved)."""
    keys = ("prompt", "negative_prompt", "strength", "steps", "guidance", "seed", "batch", "model")
    unset = "\x01unset"
    values = {key: read_setting(key, unset) for key in keys}
    return editing.params_from_settings({k: v for k, v in values.items() if v != unset})


def save_params(params: editing.Params) -> None:
    for key, value in editing.params_to_settings(params).items():
        write_setting(key, value)
