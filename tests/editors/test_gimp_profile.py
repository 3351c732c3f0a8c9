"""`easel install-plugin gimp` left to choose the folder (no --dest), then a real GIMP started in that
HOME: does GIMP find the plug-in? (The chroot's GIMP: 3.0.4 by default, 3.2.6 with
`make test-gimp-newest`.)

What GIMP does, measured with these tests: each GIMP 3.x reads user plug-ins only from its own
profile, ``~/.config/GIMP/<3.x>/plug-ins`` (plus the system folder). A GIMP 3.2 that starts with no
3.2 profile copies the newest older one (3.0's, ``plug-ins/`` included) into ``GIMP/3.2``; from then
on it never looks at 3.0's folder again.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "gimp"))
from editor_site import Scratch, easel_command
from gimp_chroot import batch_command, chroot_shell, gimp_version, require_chroot

pytestmark = pytest.mark.editor

PROBE = """import json, os
found = Gimp.get_pdb().lookup_procedure("easel-generate") is not None
json.dump({"version": Gimp.version(), "directory": Gimp.directory(), "found": found,
           "plug_in_path": Gimp.gimprc_query("plug-in-path")}, open(os.environ["EASEL_PROBE_OUT"], "w"))
"""


@pytest.fixture(scope="module")
def root(request):
    return require_chroot(request)


def start_gimp(root: Path, work: Scratch, n: int) -> dict:
    """Start GIMP (batch, console) in ``work``'s HOME; what it says about its profile and the plug-in."""
    (work.host / "probe.py").write_text(PROBE)
    env = {"HOME": work.path("home"), "EASEL_PROBE_OUT": work.path(f"probe{n}.json")}
    done = chroot_shell(root, batch_command(work.path("probe.py"), gimp_version(root)), env, timeout=240)
    result = work.host / f"probe{n}.json"
    assert result.exists(), f"GIMP wrote no probe result (rc {done.returncode}):\n{done.stdout[-3000:]}"
    return json.loads(result.read_text())


@pytest.mark.parametrize("gimp_ran_before", [False, True], ids=["fresh-home", "gimp-ran-before"])
def test_default_install_is_found_by_gimp(root, gimp_ran_before):
    version = gimp_version(root)
    work = Scratch(root)
    try:
        home = work.host / "home"
        home.mkdir()
        own = f"home/.config/GIMP/{version}"
        if gimp_ran_before:  # GIMP made its profile: the installer must find it
            before = start_gimp(root, work, 0)
            assert before["directory"] == work.path(own) and not before["found"], before
        said = easel_command("install-plugin", "gimp", home=home)
        after = start_gimp(root, work, 1)
        print(f"GIMP {after['version']}, {'after a first start' if gimp_ran_before else 'fresh HOME'}: "
              f"installer said {said.splitlines()}; plug-in-path {after['plug_in_path']}")
        assert after["version"].startswith(version)
        assert after["directory"] == work.path(own), after  # each GIMP 3.x keeps its own profile
        assert after["found"], f"GIMP {after['version']} did not register easel-generate:\n{said}\n{after}"
        # GIMP runs it from its own profile (3.2 in a fresh HOME: the copy it made of 3.0's profile)
        assert (work.host / own / "plug-ins/easel_gimp/easel_gimp.py").is_file()
    finally:
        work.cleanup()
