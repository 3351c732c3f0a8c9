"""Device and dtype resolution, and freeing accelerator memory.

Rules (docs/models.md has the user-facing version):

* device ``auto``: CUDA if available, else Apple MPS, else CPU.
* dtype ``auto``: float16 on CUDA and MPS; on CPU bfloat16 when the processor computes it natively
  (``avx512_bf16`` or ``amx_bf16`` in /proc/cpuinfo), else float32.
* Small models (weights under ``SMALL_MODEL_BYTES`` on disk, e.g. the demo and test models) keep
  float32 on CPU when the dtype is ``auto``: bf16 does not speed them up and costs precision.
"""

from __future__ import annotations

import gc
import logging

import torch

from ..settings import DEVICES
from .types import EngineError

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SMALL_MODEL_BYTES = 256 * 2**20


def resolve_device(name: str) -> str:
    """``auto|cpu|cuda|cuda:N|mps`` -> a concrete torch device string; EngineError if absent."""
    name = (name or "auto").strip().lower()
    base = name.split(":", 1)[0]
    if base not in DEVICES:
        raise EngineError(f"unknown device {name!r}; use one of {', '.join(DEVICES)}", field="device")
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if _mps_available():
            return "mps"
        return "cpu"
    if base == "cuda" and not torch.cuda.is_available():
        raise EngineError(
            f"device {name!r} asked for, but this torch ({torch.__version__}) sees no CUDA GPU; install a "
            "CUDA build of torch, check the driver, or use device 'cpu'", field="device")
    if base == "mps" and not _mps_available():
        raise EngineError("device 'mps' asked for, but Apple MPS is not available here; use 'cpu'", field="device")
    return name


def parse_devices(spec: str) -> list[str]:
    """``--device`` as a list: ``cuda:0,cuda:1`` -> one entry per worker; each must be a known device,
    a CUDA index must exist (``torch.cuda.device_count()``), none twice. ``auto`` etc. stay one entry."""
    names = [part.strip().lower() for part in (spec or "auto").split(",")]
    if any(not n for n in names):
        raise EngineError(f"device list {spec!r} has an empty entry; write it like cuda:0,cuda:1", field="device")
    if len(set(names)) != len(names):
        raise EngineError(f"device list {spec!r} names a device twice; one worker per device", field="device")
    for name in names:
        base, _, index = name.partition(":")
        if base not in DEVICES or (index and (base != "cuda" or not index.isdigit())):
            raise EngineError(f"unknown device {name!r}; use auto, cpu, mps, cuda or cuda:N", field="device")
        if len(names) > 1 and base != "cuda":
            raise EngineError(f"a device list is for GPUs (cuda:0,cuda:1); {name!r} cannot be in one — for "
                              "several CPU workers use --workers N", field="device")
        if index and torch.cuda.is_available() and int(index) >= torch.cuda.device_count():
            raise EngineError(f"device {name!r} asked for, but this machine has {torch.cuda.device_count()} CUDA "
                              f"GPU(s): cuda:0..cuda:{torch.cuda.device_count() - 1}", field="device")
    return names


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU flags list avx512_bf16 or amx_bf16 (Linux); False when unknown."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[-1].split())
                    return bool({"avx512_bf16", "amx_bf16"} & flags)
    except OSError:
        pass
    return False


def resolve_dtype(name: str, device: str, cpuinfo: str = "/proc/cpuinfo") -> str:
    """``auto|float32|float16|bfloat16`` -> a concrete dtype name for ``device``."""
    name = (name or "auto").strip().lower()
    if name not in DTYPES and name != "auto":
        raise EngineError(f"unknown dtype {name!r}; use auto, {', '.join(DTYPES)}", field="dtype")
    if name != "auto":
        if name == "float16" and device == "cpu":
            log.warning("float16 on CPU is slow and may fail for some layers; bfloat16 or float32 is better")
        return name
    if device.startswith(("cuda", "mps")):
        return "float16"
    return "bfloat16" if cpu_has_native_bf16(cpuinfo) else "float32"


def model_dtype(requested: str, resolved: str, device: str, weight_bytes: int | None) -> str:
    """The dtype one model loads in: the small-model rule applied to ``auto`` on CPU."""
    if (requested == "auto" and device == "cpu" and resolved != "float32"
            and weight_bytes is not None and weight_bytes < SMALL_MODEL_BYTES):
        return "float32"
    return resolved


def free_memory(device: str, collect: bool = True) -> None:
    """Collect garbage (if asked) and return cached accelerator memory to the driver."""
    if collect:
        gc.collect()
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device == "mps" and _mps_available():
        torch.mps.empty_cache()
