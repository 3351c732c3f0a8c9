"""Running the ``easel`` command as a user does: a subprocess in a bare environment, and its input files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from helpers.server_harness import REPO


def easel(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``easel ARGS`` in a bare environment (only the PYTHONPATH the tests run with is kept)."""
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", **keep_env("PYTHONPATH")}
    return subprocess.run([sys.executable, "-m", "easel", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


def keep_env(*names: str) -> dict[str, str]:
    """The variables ``names`` of this process's environment that are set."""
    return {n: os.environ[n] for n in names if n in os.environ}


def textured(w: int, h: int) -> np.ndarray:
    """An RGB picture where every pixel differs from its neighbours (so "unchanged" means something)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.dstack([(x * 7 + y * 3) % 256, (x * 5 + y * 11) % 256, (x * y) % 256]).astype(np.uint8)


def canvas_and_mask(tmp_path: Path) -> list[str]:
    """A textured 96x64 canvas and a selection mask written to ``tmp_path``: their `easel generate` flags."""
    PILImage.fromarray(textured(96, 64)).save(tmp_path / "canvas.png")
    mask = PILImage.new("L", (96, 64), 0)
    mask.paste(255, (40, 16, 80, 48))
    mask.save(tmp_path / "sel.png")
    return ["--image", str(tmp_path / "canvas.png"), "--mask", str(tmp_path / "sel.png")]
