"""Model library: scanning a models folder of 200 files, and loading a full-size SD 1.5 single file offline.

* **Scan**: a ComfyUI-layout folder of 200 real-sized files (SD 1.5 / SD 2.x / SDXL checkpoints, SD 1.5
  and SDXL LoRAs, VAEs) whose headers hold the real architectures' tensor names and shapes (built
  from the shipped configs on the meta device). The files are sparse (header written, size set), so
  the folder costs no disk. The first scan parses every header; a rescan of an unchanged folder
  only stats the files. Target: under a second for the first scan.
* **Full-size load** (skipped with ``--quick``): a random-weight SD 1.5 checkpoint in the original
  layout, fp16 (2.1 GB), loaded offline on the CPU in float32: by Easel's engine (header read,
  shipped config, one checkpoint read) and by diffusers' ``from_single_file(config=<same folder>)``,
  interleaved, each in a fresh process so neither inherits the other's warm modules.
"""

from __future__ import annotations

import json
import os
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

from .common import Row, check
from .fixtures import REPO, tmpdir

SECTION = "library"
_BYTES = {"F16": 2, "F32": 4}


def _real(arch: str) -> dict[str, tuple[int, ...]]:
    """Original-layout tensor names and shapes of a real ``arch`` checkpoint (meta device, no memory)."""
    sys.path.insert(0, str(REPO / "tests"))
    from helpers.real_archs import checkpoint

    return {k: v.shape for k, v in checkpoint(arch).items()}


def _lora(arch: str, rank: int = 32) -> dict[str, tuple[int, ...]]:
    sys.path.insert(0, str(REPO / "tests"))
    from helpers.real_archs import kohya_lora

    return {k: v.shape for k, v in kohya_lora(arch, rank).items()}


def write_sparse(path: Path, shapes: dict[str, tuple[int, ...]], dtype: str = "F16") -> None:
    """A safetensors file with this header and the right size, its data a hole (no disk used)."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        n = _BYTES[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()  # compact, as safetensors writes
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)
    old = time.time() - 3600
    os.utime(path, (old, old))


def build_library(root: Path, count: int = 200) -> dict[str, int]:
    """``count`` files in a ComfyUI layout: 30% checkpoints, 65% LoRAs, 5% VAEs."""
    kinds = {"checkpoints": int(count * 0.30), "vae": int(count * 0.05)}
    kinds["loras"] = count - sum(kinds.values())
    ckpt_archs, lora_archs = ["sd1", "sd1", "sdxl", "sd2", "sd1-inpaint"], ["sd1", "sdxl"]
    shapes = {a: _real(a) for a in set(ckpt_archs)}
    loras = {a: _lora(a) for a in lora_archs}
    vae = {k.removeprefix("first_stage_model."): s for k, s in shapes["sd1"].items() if k.startswith("first_stage")}
    for i in range(kinds["checkpoints"]):
        arch = ckpt_archs[i % len(ckpt_archs)]
        write_sparse(root / "checkpoints" / f"{arch}_model_{i:03d}.safetensors", shapes[arch])
    for i in range(kinds["loras"]):
        arch = lora_archs[i % 2]
        write_sparse(root / "loras" / f"{arch}_style_{i:03d}.safetensors", loras[arch])
    for i in range(kinds["vae"]):
        write_sparse(root / "vae" / f"vae_{i:02d}.safetensors", vae, "F32")
    return kinds


def scan_rows(quick: bool) -> list[Row]:
    from easel.server.library import Library

    root = Path(tmpdir("library-scan"))
    t0 = time.perf_counter()
    kinds = build_library(root)
    built = time.perf_counter() - t0
    apparent = sum(f.stat().st_size for f in root.rglob("*.safetensors")) / 2**30
    lib = Library([root], min_interval=0.0)
    t0 = time.perf_counter()
    entries = lib.scan()
    first = time.perf_counter() - t0
    usable = sum(1 for e in entries if e.problem is None)
    rescans = []
    for _ in range(3 if quick else 10):
        t0 = time.perf_counter()
        lib.scan()
        rescans.append(time.perf_counter() - t0)
    note = (f"{len(entries)} files ({kinds}), {usable} usable, {apparent:.0f} GiB apparent size (sparse); "
            f"headers of the real architectures; built in {built:.1f} s")
    return [check(SECTION, "scan 200 files, first (every header parsed)", first, "s", "<= 1.0", note),
            Row(SECTION, "rescan 200 unchanged files (stat only)", statistics.median(rescans), "s",
                note=f"median of {len(rescans)}")]


# ----------------------------------------------------------------------------- full-size single file


_LOADERS = {
    "easel": ("from easel.server.engine import Engine, EngineJob\n"
              "import numpy as np\n"
              "eng = Engine([FILE], device='cpu', dtype='float32')\n"
              "t0 = time.perf_counter(); eng.load(None); dt = time.perf_counter() - t0\n"
              "if GENERATE:\n"
              "    t1 = time.perf_counter()\n"
              "    job = EngineJob(mode='txt2img', prompt='a red circle', steps=1, seeds=[1], width=256, height=256)\n"
              "    img = np.asarray(eng.run(job, lambda p: None, lambda: False)[0])\n"
              "    print('GENERATED', time.perf_counter() - t1, img.shape[1], img.shape[0], float(img.std()))\n"),
    "diffusers": ("import torch, diffusers\n"
                  "from easel.server.library.configs import config_folder\n"
                  "cfg = config_folder('sd1')\n"
                  "t0 = time.perf_counter()\n"
                  "pipe = diffusers.StableDiffusionPipeline.from_single_file(FILE, config=cfg, torch_dtype=torch.float32,"
                  " safety_checker=None, requires_safety_checker=False)\n"
                  "dt = time.perf_counter() - t0\n"),
}


def build_sd15_file(path: Path) -> Path:
    """A random-weight SD 1.5 checkpoint (original layout, fp16) with the real architecture's tensors."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    state = {}
    for name, shape in _real("sd1").items():
        if name.endswith(("norm.weight", "norm1.weight", "norm2.weight", "norm3.weight", "norm_out.weight",
                          "layer_norm1.weight", "layer_norm2.weight", "final_layer_norm.weight", "out.0.weight")):
            state[name] = torch.ones(shape, dtype=torch.float16)
        else:
            state[name] = (torch.randn(shape, generator=g) * 0.02).to(torch.float16)
    save_file(state, str(path))
    return path


def _load_once(kind: str, file: Path, generate: bool = False) -> tuple[float, str]:
    """Seconds to load, and the GENERATED line (seconds, width, height, pixel spread) when asked."""
    code = ("import time, os\nos.environ['HF_HUB_OFFLINE'] = '1'\nimport torch\ntorch.set_num_threads("
            f"{int(os.environ.get('EASEL_BENCH_THREADS', '1'))})\nFILE = {str(file)!r}\nGENERATE = {generate}\n"
            + _LOADERS[kind] + "print('SECONDS', dt)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO / "server")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} load failed: {out.stderr[-1500:]}")
    lines = out.stdout.splitlines()
    seconds = float(next(line.split()[1] for line in lines if line.startswith("SECONDS")))
    return seconds, next((line for line in lines if line.startswith("GENERATED")), "")


def load_rows(repeats: int = 3) -> list[Row]:
    folder = Path(tmpdir("library-sd15"))
    t0 = time.perf_counter()
    file = build_sd15_file(folder / "sd15-random.safetensors")
    built = time.perf_counter() - t0
    times: dict[str, list[float]] = {"easel": [], "diffusers": []}
    generated = ""
    for r in range(repeats):
        for kind in (["easel", "diffusers"] if r % 2 == 0 else ["diffusers", "easel"]):
            seconds, line = _load_once(kind, file, generate=kind == "easel" and not generated)
            times[kind].append(seconds)
            generated = generated or line
    size = file.stat().st_size / 2**30
    file.unlink()
    e, d = statistics.median(times["easel"]), statistics.median(times["diffusers"])
    note = (f"{size:.2f} GiB fp16 file, float32 on the CPU, offline; each load in a fresh process, interleaved, "
            f"median of {repeats} (built in {built:.0f} s)")
    gen = generated.split()
    rows = [Row(SECTION, "full-size SD 1.5 single file: 1 step 256x256 after the offline load", float(gen[1]), "s",
                note=f"{gen[2]}x{gen[3]} image, pixel std {float(gen[4]):.1f} (random weights)")] if gen else []
    return rows + [Row(SECTION, "load full-size SD 1.5 single file: Easel (shipped config)", e, "s", note=note),
            Row(SECTION, "load full-size SD 1.5 single file: diffusers from_single_file(config=)", d, "s",
                note="same file and config folder"),
            Row(SECTION, "Easel / diffusers load time", e / d, "×", note="runs: easel " +
                ", ".join(f"{t:.1f}" for t in times["easel"]) + "; diffusers " +
                ", ".join(f"{t:.1f}" for t in times["diffusers"]))]


def run(quick: bool = False) -> list[Row]:
    rows = scan_rows(quick)
    if quick:
        rows.append(Row(SECTION, "load full-size SD 1.5 single file", None, "s", note="skipped with --quick"))
    else:
        rows += load_rows()
    return rows
