"""What the model-running sections share: benchmark models, test pictures, an in-process server.

* ``tiny_sd(native)``: the tests' tiny random-weight SD 1.x pipeline (``tests/helpers/tiny_models.py``) with the
  UNet's ``sample_size`` set so the model's native size is ``native`` (512 like SD 1.5 by default).
  The weights are the same; only the size the server plans work at changes. Built once per process
  into a temporary folder (never committed: saved folders are tied to the transformers version).
* ``demo_spec()``: the built-in ``easel-demo`` model when ``server/easel/server/demo/weights/`` exists, else None.
* ``serve(engine)``: the real ``App`` (real websockets on 127.0.0.1) in a background event loop, with a
  ``ResultStore`` in a temporary folder, as ``easel serve`` runs it.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from easel.server.demo import WEIGHTS_DIR

REPO = Path(__file__).resolve().parent.parent
DEMO_WEIGHTS = WEIGHTS_DIR  #: the committed demo weights (easel.server.demo)
PROMPT = "a red circle on a blue background"


@dataclass(frozen=True)
class ModelSpec:
    """A model to benchmark: how the server names it and how raw diffusers loads the same weights."""

    name: str  # label in the table
    ref: str  # what ``Engine`` is given
    native: int  # the model's native side in pixels (the server plans work at this size)
    steps: int
    guidance: float
    load_raw: Callable[[], Any]  # a fresh diffusers pipeline on the CPU in float32


_TMP: list[str] = []


def tmpdir(prefix: str) -> str:
    """A temporary folder removed when the process exits."""
    path = tempfile.mkdtemp(prefix=f"easel-bench-{prefix}-")
    if not _TMP:
        atexit.register(lambda: [shutil.rmtree(p, ignore_errors=True) for p in _TMP])
    _TMP.append(path)
    return path


@functools.cache
def tiny_sd(native: int = 512) -> ModelSpec:
    """The tests' tiny SD with native size ``native`` (built once per process)."""
    sys.path.insert(0, str(REPO / "tests"))
    from helpers.tiny_models import build_tiny_sd

    folder = build_tiny_sd(Path(tmpdir("models")) / f"tiny-sd-{native}")
    for part, size in (("unet", native // 8), ("vae", native)):
        path = Path(folder) / part / "config.json"
        config = json.loads(path.read_text())
        config["sample_size"] = size
        path.write_text(json.dumps(config))

    def load_raw() -> Any:
        from diffusers import DiffusionPipeline

        pipe = DiffusionPipeline.from_pretrained(folder)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    return ModelSpec(f"tiny-sd-{native}", folder, native, 20, 7.5, load_raw)


def demo_spec() -> ModelSpec | None:
    """The built-in demo model, if its weights exist (they are trained by `easel demo-model train`)."""
    if not (DEMO_WEIGHTS / "easel-demo.safetensors").is_file():
        return None
    from easel.server.demo import model as demo

    def load_raw() -> Any:
        return demo.load_pipeline("cpu")

    return ModelSpec(demo.DEMO_ID, demo.DEMO_ID, demo.NATIVE, demo.DEFAULT_STEPS, demo.DEFAULT_GUIDANCE, load_raw)


DEMO_MISSING = f"easel-demo skipped: {DEMO_WEIGHTS.relative_to(REPO)}/ has no weights yet (easel demo-model train)"


def engine_for(spec: ModelSpec, device: str = "cpu", dtype: str = "float32") -> Any:
    """An Engine serving ``spec`` (on the CPU in float32 unless told), its model loaded."""
    from easel.server.engine import Engine

    engine = Engine([spec.ref], device=device, dtype=dtype)
    engine.load(None)
    return engine


# ----------------------------------------------------------------------------- pictures


def canvas(size: int, seed: int = 0) -> np.ndarray:
    """A painting-like RGBA test image: smooth gradients, a disc and a little noise."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    rgb = np.stack([x, y, 0.5 + 0.5 * np.sin(6 * x + 3 * y)], -1) * 255
    rgb[(x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.05] = (200, 40, 40)
    rgb += np.random.default_rng(seed).normal(0, 4, rgb.shape)
    out = np.empty((size, size, 4), np.uint8)
    out[..., :3] = np.clip(rgb, 0, 255)
    out[..., 3] = 255
    return out


def square_mask(size: int, side: int) -> np.ndarray:
    """An HxW uint8 selection: a ``side``² square of 255 in the middle of a ``size``² image."""
    mask = np.zeros((size, size), np.uint8)
    lo = (size - side) // 2
    mask[lo:lo + side, lo:lo + side] = 255
    return mask


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def pixels(image: Any) -> np.ndarray:
    """HxWx4 uint8 from a protocol image (rgba or an encoded file)."""
    from easel.server.codec import decode_rgba

    return decode_rgba(image)


# ----------------------------------------------------------------------------- server


@contextlib.contextmanager
def serve(engine: Any) -> Iterator[tuple[str, Any]]:
    """The real App around ``engine`` on a free loopback port, with a result store; yields (url, app)."""
    from easel.server.results import ResultStore

    sys.path.insert(0, str(REPO / "tests"))
    from helpers.server_harness import inprocess_server

    with inprocess_server(engine, store=ResultStore(Path(tmpdir("results")))) as (url, app):
        yield url, app


def server_threads() -> str:
    """Torch threads of a bench server process: ``EASEL_BENCH_THREADS`` (as ``python -m bench --threads``
    sets), default 1.

    On this shared 2-core box two threads make a live frame 5-50x slower whenever another process
    runs (OpenMP threads wait on each other); one thread is steady."""
    return os.environ.get("EASEL_BENCH_THREADS", "1")


@contextlib.contextmanager
def serve_process(cmd: list[str], what: str, stop_s: float) -> Iterator[str]:
    """Run ``cmd`` (a server printing ``serving on ws://...``) offline on ``server_threads()`` threads;
    yields its URL, then terminates it (waiting ``stop_s``). ``what`` names it if it does not start."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": server_threads()}
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            found = re.search(r"serving on (ws://\S+)", line)
            if found:
                threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore
                yield found.group(1)
                break
        else:
            raise RuntimeError(f"{what} did not start:\n" + "".join(lines[-20:]))
    finally:
        proc.terminate()
        proc.wait(stop_s)


def quiet() -> None:
    """No progress bars or info logs from diffusers/transformers while timing."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()  # "Loading pipeline components" of every from_pretrained
