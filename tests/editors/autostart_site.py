"""What the "start the server from the editor" tests need around a real editor: free and held ports,
the server a plugin started (from its log), and a chroot that can run the recorded server command.

An editor in a Debian chroot (GIMP; the newest Krita) runs the command ``easel install-plugin``
recorded: this checkout's (or the wheel's) Python, ``-m easel serve``. That Python, its venv and the
Easel sources are host folders, so ``bound_chroot_command`` bind-mounts them, read-only and at the
same paths, into the chroot's private mount namespace (after its fresh /tmp, so a venv under /tmp
works too; the empty mount points stay in the chroot). The server then runs inside the chroot as a
child of the editor's plug-in, as it would on a painter's machine; the chroot shares the host's
network and process ids.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

from easel.client.editing.server_command import parse_status, split_command
from helpers.probes import free_port, held_port, listening, wait_until  # noqa: F401 - the editor tests import them from here

PREFIXES = ("import json, os, sys, easel; print(json.dumps([sys.prefix, os.path.realpath(sys.base_prefix), "
            "os.path.dirname(os.path.dirname(os.path.realpath(easel.__file__)))]))")


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def server_runs(log: Path) -> list[dict]:
    """The 'ready' start-up lines of a server log (pid, url): one per start."""
    if not log.exists():
        return []
    return [s for s in map(parse_status, log.read_text(errors="replace").splitlines()) if s and s["stage"] == "ready"]


def server_binds(command: str) -> list[str]:
    """Host folders the recorded server command needs: its venv, the Python it was made from and
    the Easel sources (an editable install); nested ones dropped."""
    python = split_command(command)[0]
    out = subprocess.run([python, "-c", PREFIXES], capture_output=True, text=True, timeout=60, check=True)
    folders = sorted({os.path.realpath(p) for p in json.loads(out.stdout)} | {os.path.dirname(python)})
    kept: list[str] = []
    for folder in folders:
        if not any(folder == k or folder.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(folder)
    return kept


def bound_chroot_command(root: Path, argv: list[str], env: dict[str, str],
                         binds: list[str]) -> tuple[list[str], dict[str, str]]:
    """editor_site.chroot_command plus read-only bind mounts of ``binds`` at the same paths."""
    mounts = "".join(f' && mkdir -p "$R"{shlex.quote(b)} && mount --bind {shlex.quote(b)} "$R"{shlex.quote(b)}'
                     f' && mount -o remount,bind,ro "$R"{shlex.quote(b)}' for b in binds)
    inner_env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **env}
    setup = ('mount -t proc proc "$R/proc" && mount -t sysfs sysfs "$R/sys" && mount --rbind /dev "$R/dev" '
             f'&& mount -t tmpfs tmpfs "$R/tmp"{mounts} && exec chroot "$R" env -i "$@"')
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", setup, "sh",
           *(f"{k}={v}" for k, v in inner_env.items()), *argv]
    return cmd, {"R": str(root), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
