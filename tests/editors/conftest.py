"""The Krita GUI run, shared by test_krita_gui.py and test_krita_live.py: one Krita session per pytest
session (it takes a minute), against one real Easel server."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "krita"))


@pytest.fixture(scope="session")
def krita_server_url(request, tmp_path_factory):
    """A real ``easel serve`` with the tiny model, a tiny LoRA, a tiny ControlNet and a result store
    (EASEL_TEST_SERVER_URL: a server you started yourself)."""
    external = os.environ.get("EASEL_TEST_SERVER_URL")
    if external:
        yield external
        return
    from gui_run import tiny_server

    with tiny_server(request.getfixturevalue("tiny_sd_path"), tmp_path_factory.mktemp("krita-server")) as url:
        yield url


@pytest.fixture(scope="session")
def krita_gui(request, krita_server_url, tmp_path_factory):
    """Krita's GUI on Xvfb with the plugin and the self-test plugin; what the self-test recorded."""
    from gui_run import gui_spec, krita_gui_session
    from krita_host import ARTIFACTS

    yield from krita_gui_session(request, tmp_path_factory.getbasetemp(), gui_spec(krita_server_url),
                                 krita_server_url, ARTIFACTS / "krita_docker.png")


@pytest.fixture(scope="module")
def root(request):
    """The GIMP chroot the GIMP tests run in (EASEL_GIMP_ROOT, else the oldest supported, trixie's)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent / "gimp"))
    from gimp_chroot import require_chroot

    return require_chroot(request)
