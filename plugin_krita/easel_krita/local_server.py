"""Starting a local Easel server from Krita (``shared.editing.ServerManager``, one per Krita process).

When the server URL is on this machine and nothing answers there, Generate (and Upscale, History,
Connect) first start ``server_command server_args`` from kritarc's ``[easel]`` group (recorded by
``easel install-plugin krita``), on the URL's port, with ``--parent-pid`` set to Krita's process:
it stops when Krita quits (``stop``), and by itself if Krita ends any other way. A server the
painter started is never stopped.
"""

from __future__ import annotations

import os

from krita import Krita

from .krita_settings import SETTINGS_GROUP
from .shared import editing
from .shared.editing.server_command import ARGS_KEY, AUTOSTART_KEY, COMMAND_KEY, ServerSettings

WHERE = "the Easel docker's Server settings"


def load_settings() -> ServerSettings:
    """The server settings in kritarc (GUI thread only: Krita's settings are not for workers)."""
    app = Krita.instance()
    return ServerSettings.from_strings({key: app.readSetting(SETTINGS_GROUP, key, default)
                                        for key, default in ((COMMAND_KEY, ""), (ARGS_KEY, ""),
                                                             (AUTOSTART_KEY, "true"))})


def save_settings(settings: ServerSettings) -> None:
    app = Krita.instance()
    for key, value in settings.to_strings().items():
        app.writeSetting(SETTINGS_GROUP, key, value)


class KritaServer:
    """The server this Krita started (if any) and the hooks that start it before a job connects."""

    def __init__(self, client_name: str):
        self.manager = editing.ServerManager("Krita", parent_pid=os.getpid(), where=WHERE, client_name=client_name)

    def hooks(self, url: str, token: str | None, job: str | None = None, on_progress=None) -> dict:
        """``prepare``/``explain`` for an ``editing.ClientTask`` (read the settings now, on the GUI thread)."""
        return self.manager.hooks(url, token, load_settings(), job, on_progress)

    def describe(self) -> str:
        return self.manager.describe()

    def stop(self) -> None:
        """Stop the server Krita started (Krita is quitting, or the painter pressed Stop)."""
        self.manager.stop()
