"""Test-only pykrita plugin: the Easel docker with no server running (EASEL_AUTOSTART_TEST=<dir>)."""

import os

if os.environ.get("EASEL_AUTOSTART_TEST"):
    from .driver import register

    register(os.environ["EASEL_AUTOSTART_TEST"])
