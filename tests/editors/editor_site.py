"""Where a real editor runs for the tests, and how the plugin gets there.

An editor runs either on this machine (``root`` None: Debian's Krita) or inside a Debian chroot
(GIMP 3.0 in trixie from .ci/install_gimp.sh; the newest Krita and GIMP in sid from
.ci/install_sid_editors.sh). Chroot runs happen in a private mount namespace (``unshare
--mount``): /proc, /sys, /dev and a fresh /tmp are mounted for the editor there and vanish with
it, so nothing stays mounted on the host and parallel runs do not disturb each other. The chroot
shares the host's network (an Easel server on the host's 127.0.0.1 is reachable) and its abstract
X sockets (an Xvfb started on the host serves a chroot's editor).

Plugins are installed as painters install them, with ``easel install-plugin``: the command
``EASEL_PLUGIN_INSTALLER`` names (CI: the installed wheel's ``easel``), else this checkout's
(``python -m easel``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALLER_ENV = "EASEL_PLUGIN_INSTALLER"


def artifacts(root: Path | None, default_root: Path | None) -> Path:
    """artifacts/ for the default installation, artifacts/<chroot name>/ for another one."""
    base = REPO / "artifacts"
    return base if root == default_root else base / (root.name if root else "host")


def problem_with_chroot(root: Path, probe: str, how: str) -> str | None:
    """Why the chroot at ``root`` cannot be used (``probe``: a path inside it that must exist), or None."""
    if not (root / probe).exists():
        return f"no {probe} in {root}: run {how}"
    if os.geteuid() != 0:
        return "the editor tests in a chroot need root (chroot, mount namespaces)"
    if shutil.which("unshare") is None:
        return "the editor tests in a chroot need unshare (util-linux)"
    return None


def fail_or_skip(request, problem: str) -> None:
    """A missing editor fails loudly in CI or when editor tests were asked for (-m editor); else skips."""
    if os.environ.get("CI") or request.config.getoption("markexpr", "").strip() == "editor":
        pytest.fail(problem)
    pytest.skip(problem)


def chroot_command(root: Path, argv: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """(command, host environment) running ``argv`` inside ``root`` with a clean environment:
    ``env`` plus PATH and LANG, nothing of this process's."""
    inner_env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **env}
    setup = ('mount -t proc proc "$R/proc" && mount -t sysfs sysfs "$R/sys" && mount --rbind /dev "$R/dev" '
             '&& mount -t tmpfs tmpfs "$R/tmp" && exec chroot "$R" env -i "$@"')
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", setup, "sh",
           *(f"{k}={v}" for k, v in inner_env.items()), *argv]
    return cmd, {"R": str(root), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}


class Scratch:
    """A throw-away folder the editor can see: a host temp folder, or ``/var/tmp/easel-tests/run-…``
    inside the chroot. ``host`` is its path here, ``path(…)`` a path as the editor sees it."""

    def __init__(self, root: Path | None, prefix: str = "run-", base: Path | None = None):
        if root is None:
            base = base or Path(tempfile.gettempdir())
        else:
            base = root / "var/tmp/easel-tests"
            base.mkdir(parents=True, exist_ok=True)
            for stale in base.iterdir():  # left by a run that was killed
                if time.time() - stale.stat().st_mtime > 6 * 3600:
                    shutil.rmtree(stale, ignore_errors=True)
        self.root = root
        self.host = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
        self.host.chmod(0o755)
        self.inner = str(self.host) if root is None else "/" + str(self.host.relative_to(root))

    def path(self, *parts: str) -> str:
        return "/".join([self.inner, *parts])

    def cleanup(self) -> None:
        shutil.rmtree(self.host, ignore_errors=True)


def easel_command(*args: str, home: Path | None = None) -> str:
    """Run ``easel ARGS``: the wheel's command (EASEL_PLUGIN_INSTALLER), else this checkout's
    (``python -m easel``); with ``home``, as a user whose HOME that is (no XDG_* variables). Its output."""
    installer = os.environ.get(INSTALLER_ENV)
    if installer and not os.access(installer, os.X_OK):
        pytest.fail(f"{INSTALLER_ENV}={installer} is not an executable `easel` (make wheel-smoke builds it)")
    cmd = [installer] if installer else [sys.executable, "-m", "easel"]
    cmd += args
    drop = ("PYTHON", "VIRTUAL_ENV", "XDG_", "GIMP3_") if home else ("PYTHON", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    if home:
        env["HOME"] = str(home)
    done = subprocess.run(cmd, env=env, cwd=home or tempfile.gettempdir(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=120)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}")
    return done.stdout


def install_plugin(editor: str, dest: Path, kritarc: Path | None = None) -> Path:
    """``easel install-plugin EDITOR --dest DEST`` (Krita: enabled in ``kritarc``), as painters run it:
    the wheel's command under CI, this checkout's otherwise. The plugin's folder."""
    args = ["install-plugin", editor, "--dest", str(dest)] + (["--kritarc", str(kritarc)] if kritarc else [])
    out = easel_command(*args)
    print(f"{os.environ.get(INSTALLER_ENV) or 'python -m easel'}: {out.splitlines()[0] if out else ''}")
    target = dest / {"krita": "easel_krita", "gimp": "easel_gimp"}[editor]
    for part in ("shared/connection.py", "shared/send_region.py", "vendor/websockets/__init__.py"):
        assert (target / part).is_file(), f"the installed {editor} plugin has no {part} ({target})"
    return target
