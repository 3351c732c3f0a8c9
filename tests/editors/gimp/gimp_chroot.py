"""Drive GIMP 3 inside the Debian trixie chroot that .ci/install_gimp.sh builds.

Every run happens in a private mount namespace (``unshare --mount``): /proc, /dev and a fresh
/tmp are mounted for GIMP there and vanish with it, so nothing is left mounted on the host and
parallel runs do not disturb each other. The chroot shares the host's network, so GIMP reaches
an Easel server on the host's 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(os.environ.get("EASEL_GIMP_ROOT", "/var/cache/easel/gimp3-trixie"))
REPO = Path(__file__).resolve().parents[3]


def require_chroot() -> Path:
    """The chroot, or a loud failure under CI (these tests must never be skipped there)."""
    problem = None
    if not (ROOT / "usr/bin/gimp-console-3.0").exists():
        problem = f"no GIMP 3 chroot at {ROOT}: run .ci/install_gimp.sh (or set EASEL_GIMP_ROOT)"
    elif os.geteuid() != 0:
        problem = "the GIMP tests need root (chroot, mount namespaces)"
    elif shutil.which("unshare") is None:
        problem = "the GIMP tests need unshare (util-linux)"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    return ROOT


class Workdir:
    """A folder inside the chroot (``/var/tmp/easel-tests/run-…``) with a GIMP profile holding the plug-in."""

    def __init__(self, root: Path):
        base = root / "var/tmp/easel-tests"
        base.mkdir(parents=True, exist_ok=True)
        for stale in base.glob("run-*"):  # left by a run that was killed
            if time.time() - stale.stat().st_mtime > 6 * 3600:
                shutil.rmtree(stale, ignore_errors=True)
        self.root = root
        self.host = Path(tempfile.mkdtemp(prefix="run-", dir=base))
        self.host.chmod(0o755)
        self.inner = "/" + str(self.host.relative_to(root))
        for sub in ("home", "in", "out"):
            (self.host / sub).mkdir()
        # a profile that skips the welcome dialog and the "tip of the day"
        profile = self.host / "home/.config/GIMP/3.0"
        profile.mkdir(parents=True)
        (profile / "gimprc").write_text("(show-welcome-dialog no)\n(show-tips no)\n")

    def plugins(self) -> Path:
        return self.host / "home/.config/GIMP/3.0/plug-ins"

    def path(self, *parts: str) -> str:
        """A path as GIMP sees it inside the chroot."""
        return "/".join([self.inner, *parts])

    def cleanup(self) -> None:
        shutil.rmtree(self.host, ignore_errors=True)


def _chroot_cmd(root: Path, script: str, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    inner_env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **env}
    setup = ('mount -t proc proc "$R/proc" && mount --rbind /dev "$R/dev" && mount -t tmpfs tmpfs "$R/tmp" '
             '&& exec chroot "$R" env -i "$@"')
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", setup, "sh",
           *(f"{k}={v}" for k, v in inner_env.items()), "sh", "-c", script]
    return cmd, {"R": str(root), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def chroot_shell(root: Path, script: str, env: dict[str, str], timeout: float,
                 log: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``sh -c script`` in the chroot with a clean environment (``env`` plus PATH and LANG)."""
    cmd, host_env = _chroot_cmd(root, script, env)
    out = subprocess.run(cmd, env=host_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=timeout)
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(out.stdout)
    return out


def start_chroot_shell(root: Path, script: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    """Like ``chroot_shell`` but in the background, in its own process group (output to ``log``)."""
    cmd, host_env = _chroot_cmd(root, script, env)
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


def batch_command(script: str) -> str:
    """The gimp-console command that executes a Python file with the python-fu-eval interpreter."""
    return ("gimp-console-3.0 -i --batch-interpreter=python-fu-eval "
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
