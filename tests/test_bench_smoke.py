"""The benchmark suite stays runnable: the runner writes its table and JSON, every section imports.

Not a timing test (timings live in docs/performance.md). The model-running sections take minutes,
so here the runner runs the GPU section only (a skip row without CUDA) and the transfer round trip
runs on a small image; `make bench` runs everything.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `bench` is a top-level folder, not an installed package
    sys.path.insert(0, str(REPO))


def test_runner_writes_table_and_json(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("EASEL_BENCH_GPU_DRYRUN", None)
    env.pop("EASEL_BENCH_THREADS", None)
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--only", "gpu", "--json", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "section" in proc.stdout and "gpu" in proc.stdout
    data = json.loads(out.read_text())
    assert data["quick"] is True and data["machine"]["cores"] >= 1 and data["machine"]["threads"] == 1
    assert data["rows"] and all(row["section"] == "gpu" for row in data["rows"])
    import torch

    if not torch.cuda.is_available():
        assert data["rows"][0]["value"] is None and "no CUDA device" in data["rows"][0]["note"]


@pytest.mark.parametrize("section", ["transfer", "overhead", "previews", "memory", "selection", "concurrency", "gpu"])
def test_section_imports(section):
    from bench.__main__ import SECTIONS

    assert section in SECTIONS
    assert callable(importlib.import_module(f"bench.{section}").run)


def test_transfer_round_trip_small():
    from websockets.sync.client import connect

    from bench.transfer import FORMATS, EchoServer, canvas, round_trip

    pixels = canvas(64)
    server = EchoServer()
    with connect(f"ws://127.0.0.1:{server.port}", compression=None) as ws:
        for fmt in FORMATS:
            assert np.array_equal(round_trip(ws, pixels, fmt), pixels)


def test_check_and_interleaved():
    from bench.common import check, interleaved

    assert check("s", "n", 1.04, "×", "<= 1.05").ok and not check("s", "n", 6.0, "%", "<= 5%").ok
    assert check("s", "n", 0.95, "×", ">= 0.9").ok
    calls = []
    times = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=2, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a"] and len(times["a"]) == len(times["b"]) == 2


def test_full_size_bench_runs_without_comfyui_and_compares_pixels(tmp_path):
    """`make bench-full`'s runner (the model-free part): the ComfyUI section skips with the way to turn it
    on, the table and JSON are written; the pixel note tells identical from close pictures."""
    from bench.full import pixel_note

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "EASEL_BENCH_CACHE": str(tmp_path / "cache")}
    env.pop("EASEL_BENCH_COMFYUI", None)
    out = tmp_path / "full.json"
    proc = subprocess.run([sys.executable, "-m", "bench.full", "--only", "comfyui", "--json", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["bf16"] and data["rows"][0]["value"] is None and "EASEL_BENCH_COMFYUI" in data["rows"][0]["note"]
    assert not (tmp_path / "cache").exists(), "skipping ComfyUI builds no model"
    a = np.full((4, 4, 3), 100, np.uint8)
    b = a.copy()
    assert pixel_note(a, b) == "pixels identical to raw diffusers"
    b[0, 0, 0] = 110
    assert "max 10" in pixel_note(b, a) and "PSNR" in pixel_note(b, a)


def test_full_size_bench_openvino_section_skips_and_holds_the_tolerance(tmp_path):
    """`make bench-full --only openvino int8` with EASEL_BENCH_OPENVINO=off: a skip row each that says how to turn
    it on, no model and no venv built; the fp32, OpenVINO and int8 sections are listed; the tolerance (mean <= 2, PSNR >= 40 dB)
    tells a close picture from a different one."""
    from bench.full import SECTIONS
    from bench.openvino_venv import within_tolerance

    assert {"fp32", "openvino", "int8"} <= set(SECTIONS)
    venv = tmp_path / "venv"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "EASEL_BENCH_CACHE": str(tmp_path / "cache"),
           "EASEL_BENCH_OPENVINO": "off", "EASEL_BENCH_OPENVINO_VENV": str(venv)}
    out = tmp_path / "full.json"
    proc = subprocess.run([sys.executable, "-m", "bench.full", "--only", "openvino", "int8", "--json", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2 and all(r["value"] is None and "EASEL_BENCH_OPENVINO" in r["note"] for r in rows)
    assert "OpenVINO" in rows[0]["name"] and "int8" in rows[1]["name"]
    assert not venv.exists() and not (tmp_path / "cache").exists()
    ref = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    close = np.clip(ref.astype(int) + np.random.default_rng(1).integers(-1, 2, ref.shape), 0, 255).astype(np.uint8)
    assert within_tolerance(ref, ref)[0] and within_tolerance(close, ref)[0]
    assert not within_tolerance(255 - ref, ref)[0]
