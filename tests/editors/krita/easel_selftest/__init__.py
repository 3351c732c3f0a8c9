"""Test-only pykrita plugin: drives the Easel plugin in Krita's GUI when EASEL_SELFTEST is set."""

import os

if os.environ.get("EASEL_SELFTEST"):
    from .driver import register

    register(os.environ["EASEL_SELFTEST"])
