"""OpenVINO (through optimum-intel) on the same job, for ``make bench-full --only openvino``.

OpenVINO and optimum-intel live in a venv of their own, ``bench/.venv-openvino`` (``$EASEL_BENCH_OPENVINO_VENV``),
made here on first use with ``PACKAGES`` from the package index (torch held by constraints.txt); they never
enter Easel's .venv or its lock. ``EASEL_BENCH_OPENVINO=off`` skips the section. The job runs in that venv's
python (bench/openvino_job.py) on the same random-weight folder, prompt, seed, size, steps, cfg and scheduler;
its picture is held to the documented tolerance against raw diffusers in fp32 (``within_tolerance``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from . import fixtures
from .common import Row, loadavg, med, paired_ratio

PACKAGES = ["openvino==2026.4.1", "optimum-intel[openvino,diffusers]==2.2.0"]
#: The pixel tolerance of a speed option against raw diffusers (docs/performance.md, "Pixel tolerance").
MAX_MEAN, MIN_PSNR = 2.0, 40.0


def venv() -> Path:
    return Path(os.environ.get("EASEL_BENCH_OPENVINO_VENV") or Path(__file__).resolve().parent / ".venv-openvino")


def disabled() -> str | None:
    """Why the section is skipped (``EASEL_BENCH_OPENVINO=off``), or None."""
    if os.environ.get("EASEL_BENCH_OPENVINO", "").lower() in ("off", "0", "no"):
        return "skipped: EASEL_BENCH_OPENVINO=off (unset it to build bench/.venv-openvino and time OpenVINO)"
    return None


def ensure_venv() -> Path:
    """The OpenVINO venv's python; the venv is made and filled with ``PACKAGES`` when it has none."""
    folder = venv()
    python = folder / "bin" / "python"
    stamp = folder / "easel-packages.txt"
    if python.exists() and stamp.is_file() and stamp.read_text().split() == PACKAGES:
        return python
    print(f"  making {folder} with {' '.join(PACKAGES)} (once, a few minutes)…", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-c", str(fixtures.REPO / "constraints.txt"),
                    *PACKAGES], check=True)
    # optimum-intel pulls PyPI's torchvision, built for another torch: importing transformers' processors then
    # fails ("torchvision::nms does not exist"); nothing on the Stable Diffusion path needs it
    subprocess.run([str(python), "-m", "pip", "uninstall", "--quiet", "-y", "torchvision"], check=True)
    stamp.write_text("\n".join(PACKAGES))
    return python


def within_tolerance(got: np.ndarray, ref: np.ndarray) -> tuple[bool, float, float]:
    """(inside the tolerance, mean absolute difference, PSNR in dB) of two HxWx3 uint8 pictures."""
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    mse = float((diff ** 2).mean())
    psnr = float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)
    mean = float(diff.mean())
    return mean <= MAX_MEAN and psnr >= MIN_PSNR, mean, psnr


def job_args(prompt: str, seed: int, size: int, steps: int, guidance: float, repeats: int, threads: int) -> list[str]:
    """The job's arguments, as both venv scripts take them."""
    return ["--prompt", prompt, "--seed", str(seed), "--size", str(size), "--steps", str(steps), "--repeats",
            str(repeats), "--threads", str(threads), "--guidance", str(guidance)]


def venv_job(script: str, args: list[str], threads: int, **env: str) -> dict[str, Any]:
    """Run ``script`` (next to this file) in the OpenVINO venv; its last stdout line, read as JSON."""
    cmd = [str(ensure_venv()), str(Path(__file__).with_name(script)), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads), **env})
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def openvino_rows(folder: Path, reference: np.ndarray, prompt: str, seed: int, size: int, steps: int,
                  guidance: float, repeats: int, threads: int) -> list[Row]:
    """The job in OpenVINO f32 (median after a warm-up) and its pixels against raw diffusers fp32 ``reference``."""
    what = f"OpenVINO (optimum-intel) f32 SD1.5 512², {steps} steps, cfg {guidance:g}"
    why = disabled()
    if why:
        return [Row("full", what, None, "", note=why)]
    before = loadavg()
    job = job_args(prompt, seed, size, steps, guidance, repeats, threads)
    with tempfile.TemporaryDirectory(prefix="easel-openvino-") as tmp:
        out = Path(tmp) / "image.npy"
        info = venv_job("openvino_job.py", ["--folder", str(folder), "--export", str(folder.with_name(folder.name + "-openvino")),
                                            "--out", str(out), *job], threads)
        image = np.load(out)
    ok, mean, psnr = within_tolerance(image, reference)
    note = (f"openvino {info['openvino']}, optimum-intel {info['optimum_intel']}, {info['scheduler']}, static "
            f"512² shapes, INFERENCE_PRECISION_HINT {info['precision']}, {threads} thread(s); "
            f"load {before} before, {loadavg()} after")
    return [Row("full", what, med(info["times"]), "s", note=note),
            Row("full", "OpenVINO f32 pixels vs raw diffusers fp32: mean |difference|", mean, "",
                f"<= {MAX_MEAN:g}", mean <= MAX_MEAN, f"PSNR {psnr:.1f} dB (>= {MIN_PSNR:g}: "
                f"{'yes' if psnr >= MIN_PSNR else 'no'}); within the tolerance: {'yes' if ok else 'no'}")]


def int8_rows(folder: Path, prompt: str, seed: int, size: int, steps: int, guidance: float, repeats: int,
              threads: int) -> list[Row]:
    """int8 in OpenVINO (NNCF, bench/openvino_int8.py) against torch and OpenVINO fp32, VNNI kernels only."""
    what = f"OpenVINO int8 (NNCF) SD1.5 512², {steps} steps, cfg {guidance:g}"
    why = disabled()
    if why:
        return [Row("full", what, None, "", note=why)]
    before = loadavg()
    info = venv_job("openvino_int8.py", ["--folder", str(folder), "--cache", str(folder.with_name(folder.name + "-int8")),
                                         *job_args(prompt, seed, size, steps, guidance, repeats, threads)],
                    threads, ONEDNN_MAX_CPU_ISA="AVX512_CORE_VNNI")
    times, base = info["times"], info["times"]["torch fp32"]
    rows = []
    for name, series in times.items():
        pixels = info["pixels"][name]
        psnr = pixels["psnr"]
        inside = pixels["mean"] <= MAX_MEAN and (psnr is None or psnr >= MIN_PSNR)
        note = "the reference" if psnr is None else (
            f"{paired_ratio(base, series):.2f}× torch fp32 (paired); pixels vs torch fp32: mean {pixels['mean']:.2f}, "
            f"PSNR {psnr:.1f} dB, within the tolerance: {'yes' if inside else 'no'}")
        rows.append(Row("full", f"int8 turns: {name}", med(series), "s", note=note))
    rows[-1].note += (f"; openvino {info['openvino'].split('-')[0]}, nncf {info['nncf']}, ONEDNN_MAX_CPU_ISA="
                      f"AVX512_CORE_VNNI (convolution kernels: UNet {info['unet_kernels']}, decoder "
                      f"{info['decoder_kernels']}); calibration on 2 other jobs, quantizing took {info['quantize_s']} s; "
                      f"{threads} thread(s); load {before} before, {loadavg()} after")
    return rows
