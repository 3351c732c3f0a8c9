"""Host-side helpers for tests/editors/test_krita.py: finding tools, Krita's environment, Xvfb."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest


def need(request, tool: str) -> str:
    """The tool's path; a missing Krita fails loudly when editor tests were asked for (or in CI)."""
    path = shutil.which(tool)
    if path:
        return path
    message = f"{tool} is not installed: run .ci/install_krita.sh (Debian: krita, xvfb, imagemagick)"
    if os.environ.get("CI") or request.config.getoption("markexpr", "").strip() == "editor":
        pytest.fail(message)
    pytest.skip(message)


def krita_env(home: Path, **extra: str) -> dict[str, str]:
    """Krita's environment: a throw-away HOME, nothing of this venv's Python."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "QT_", "VIRTUAL_ENV", "EASEL_", "XDG_", "DISPLAY", "WAYLAND"))}
    run = home / "run"
    run.mkdir(mode=0o700, parents=True, exist_ok=True)
    env.update(HOME=str(home), XDG_RUNTIME_DIR=str(run), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_DATA_HOME=str(home / ".local" / "share"), LC_ALL="C.UTF-8", **extra)
    return env


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
