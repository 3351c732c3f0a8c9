"""Drive GIMP 3 inside a Debian chroot (tests/editors/editor_site.py runs it in a private mount
namespace).

Which GIMP: ``EASEL_GIMP_ROOT`` names the chroot; by default the trixie chroot .ci/install_gimp.sh
builds (GIMP 3.0.4, the oldest supported); ``make test-gimp-newest`` points it at the sid chroot of
.ci/install_sid_editors.sh (the newest GIMP Debian ships). The GIMP version is read from the
chroot's binaries (``gimp-console-3.0``, ``gimp-console-3.2``): it names the binaries and the
profile folder (``~/.config/GIMP/3.2``: GIMP 3.2 reads user plug-ins from its own profile only).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from editor_site import Scratch, artifacts, chroot_command, fail_or_skip, problem_with_chroot

DEFAULT_ROOT = Path("/var/cache/easel/gimp3-trixie")
ROOT = Path(os.environ.get("EASEL_GIMP_ROOT") or DEFAULT_ROOT)
ARTIFACTS = artifacts(ROOT, DEFAULT_ROOT)


def gimp_version(root: Path = ROOT) -> str:
    """"3.0" or "3.2": the newest ``gimp-console-3.N`` in the chroot."""
    found = sorted((p.name.rsplit("-", 1)[1] for p in (root / "usr/bin").glob("gimp-console-3.*")),
                   key=lambda v: tuple(int(n) for n in v.split(".")))
    return found[-1] if found else "3.0"


def require_chroot(request) -> Path:
    """The chroot, or a loud failure under CI (these tests must never be skipped there)."""
    problem = problem_with_chroot(ROOT, f"usr/bin/gimp-console-{gimp_version()}",
                                  ".ci/install_gimp.sh (or set EASEL_GIMP_ROOT)")
    if problem:
        fail_or_skip(request, problem)
    return ROOT


class Workdir(Scratch):
    """A folder inside the chroot with a GIMP profile (for this GIMP version) holding the plug-in."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.version = gimp_version(root)
        for sub in ("home", "in", "out"):
            (self.host / sub).mkdir()
        # a profile that skips the welcome dialog and the "tip of the day"
        profile = self.host / f"home/.config/GIMP/{self.version}"
        profile.mkdir(parents=True)
        (profile / "gimprc").write_text("(show-welcome-dialog no)\n(show-tips no)\n")

    def plugins(self) -> Path:
        return self.host / f"home/.config/GIMP/{self.version}/plug-ins"


def chroot_shell(root: Path, script: str, env: dict[str, str], timeout: float,
                 log: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``sh -c script`` in the chroot with a clean environment (``env`` plus PATH and LANG)."""
    cmd, host_env = chroot_command(root, ["sh", "-c", script], env)
    out = subprocess.run(cmd, env=host_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=timeout)
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(out.stdout)
    return out


def start_chroot_shell(root: Path, script: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    """Like ``chroot_shell`` but in the background, in its own process group (output to ``log``)."""
    cmd, host_env = chroot_command(root, ["sh", "-c", script], env)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        return subprocess.Popen(cmd, env=host_env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def free_display() -> int:
    """An X display number no X server (host or chroot: they share abstract sockets) is using."""
    used = Path("/proc/net/unix").read_text()
    for n in range(137, 400):
        if f"/tmp/.X11-unix/X{n}" not in used and not Path(f"/tmp/.X{n}-lock").exists():
            return n
    raise RuntimeError("no free X display number")


def batch_command(script: str, version: str) -> str:
    """The gimp-console command that executes a Python file with the python-fu-eval interpreter."""
    return (f"gimp-console-{version} -i --batch-interpreter=python-fu-eval "
            f"-b \"exec(open('{script}').read())\" --quit")


def xwd_to_png(xwd: Path, png: Path, crop_png: Path | None = None, box: tuple[int, int, int, int] | None = None):
    """Convert Xvfb's -fbdir screen file (XWD, 24/32-bit TrueColor) to PNG; optionally also save
    the ``box`` = (x, y, width, height) part of it (one window) as ``crop_png``."""
    from PIL import Image

    data = xwd.read_bytes()
    head = struct.unpack(">25I", data[:100])
    header_size, width, height = head[0], head[4], head[5]
    byte_order, bits_per_pixel, bytes_per_line, ncolors = head[7], head[11], head[12], head[19]
    if bits_per_pixel != 32:
        raise ValueError(f"unsupported XWD: {bits_per_pixel} bits per pixel")
    start = header_size + 12 * ncolors
    raw = data[start:start + bytes_per_line * height]
    mode = "BGRX" if byte_order == 0 else "XRGB"
    screen = Image.frombuffer("RGB", (width, height), raw, "raw", mode, bytes_per_line, 1)
    screen.save(png)
    if crop_png is not None and box is not None:
        x, y, w, h = box
        screen.crop((x, y, x + w, y + h)).save(crop_png)
