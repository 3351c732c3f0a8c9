"""Where the Krita tests run Krita: finding tools, Krita's environment, Xvfb.

By default Krita is this machine's (Debian 12's Krita 5.1.5, the oldest supported: `make
test-krita`). ``EASEL_KRITA_ROOT`` names a Debian chroot to run Krita from instead (`make
test-krita-newest`: the sid chroot of .ci/install_sid_editors.sh, the newest Krita Debian ships);
Krita then runs inside it (tests/editors/editor_site.py), on an Xvfb started on this machine (the
chroot shares its abstract X sockets), and the screenshot is taken here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from editor_site import Scratch, artifacts, chroot_command, fail_or_skip, problem_with_chroot

from easel.plugin_settings import set_in_kritarc

HERE = Path(__file__).resolve().parent
ROOT = Path(os.environ["EASEL_KRITA_ROOT"]) if os.environ.get("EASEL_KRITA_ROOT") else None
ARTIFACTS = artifacts(ROOT, None)


def need(request, tool: str) -> str:
    """A tool of this machine; a missing one fails loudly when editor tests were asked for (or in CI)."""
    path = shutil.which(tool)
    if not path:
        fail_or_skip(request, f"{tool} is not installed: run .ci/install_krita.sh (Debian: krita, xvfb, imagemagick)")
    return path


def need_krita(request, tool: str) -> str:
    """``krita`` or ``kritarunner`` where Krita runs: this machine's, or the chroot's."""
    if ROOT is None:
        return need(request, tool)
    problem = problem_with_chroot(ROOT, f"usr/bin/{tool}", ".ci/install_sid_editors.sh (or unset EASEL_KRITA_ROOT)")
    if problem:
        fail_or_skip(request, problem)
    return f"/usr/bin/{tool}"


def scratch(prefix: str, base: Path) -> Scratch:
    """A folder Krita can see: under ``base`` on this machine, inside the chroot otherwise."""
    return Scratch(ROOT, prefix, base)


def krita_env(home: Path, **extra: str) -> dict[str, str]:
    """Krita's environment on this machine: a throw-away HOME, nothing of this venv's Python."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "QT_", "VIRTUAL_ENV", "EASEL_", "XDG_", "DISPLAY", "WAYLAND"))}
    run = home / "run"
    run.mkdir(mode=0o700, parents=True, exist_ok=True)
    env.update(HOME=str(home), XDG_RUNTIME_DIR=str(run), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_DATA_HOME=str(home / ".local" / "share"), LC_ALL="C.UTF-8", **extra)
    return env


def krita_command(work: Scratch, argv: list[str], **extra: str) -> tuple[list[str], dict[str, str]]:
    """(command, environment) running ``argv`` where Krita runs, with HOME = ``work``'s home/."""
    if ROOT is None:
        return argv, krita_env(work.host / "home", **extra)
    (work.host / "home" / "run").mkdir(mode=0o700, parents=True, exist_ok=True)
    home = work.path("home")
    env = dict(HOME=home, XDG_RUNTIME_DIR=f"{home}/run", XDG_CONFIG_HOME=f"{home}/.config",
               XDG_DATA_HOME=f"{home}/.local/share", LC_ALL="C.UTF-8", **extra)
    return chroot_command(ROOT, argv, env)


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def xvfb(path: str):
    """Xvfb on a free display (it picks the number), kept alive across Krita's X reconnects (-noreset)."""
    read, write = os.pipe()
    proc = subprocess.Popen([path, "-displayfd", str(write), "-screen", "0", "1600x1000x24", "-noreset",
                             "-nolisten", "tcp"], pass_fds=(write,), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    os.close(write)
    try:
        with os.fdopen(read) as fh:
            display = fh.readline().strip()
        if not display:
            raise RuntimeError("Xvfb did not start")
        yield f":{display}"
    finally:
        proc.terminate()
        proc.wait(10)


def paste(result, W: int, H: int) -> bytes:
    """A W x H transparent layer with the result image at its offset (what Krita's layer should hold)."""
    layer = bytearray(W * H * 4)
    img = result.image
    for row in range(img.height):
        y = result.y + row
        if not 0 <= y < H:
            continue
        x0, x1 = max(result.x, 0), min(result.x + img.width, W)
        src = img.data[(row * img.width + x0 - result.x) * 4:(row * img.width + x1 - result.x) * 4]
        layer[(y * W + x0) * 4:(y * W + x1) * 4] = src
    return bytes(layer)


def add_test_plugin(pykrita: Path, kritarc: Path, name: str) -> None:
    """Install the test-only pykrita plugin ``name`` (easel_selftest, easel_autostart) next to Easel's,
    with the driver code both share, and enable it in kritarc."""
    shutil.copytree(HERE / name, pykrita / name)
    shutil.copy2(HERE / "driver_common.py", pykrita / name / "driver_common.py")
    shutil.copy2(HERE / f"{name}.desktop", pykrita / f"{name}.desktop")
    set_in_kritarc(kritarc, "python", {f"enable_{name}": "true"})
