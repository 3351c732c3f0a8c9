"""Out of memory: telling it apart from other failures, and the load error that says what a model needs.

A model that does not fit fails while loading (the CPU allocator's "can't allocate memory", CUDA's
``OutOfMemoryError``). The message then names the model's weight size at the dtype it loads in, counted from
the safetensors headers of its weight files (shapes only, nothing is read beyond the headers; other files count
at their size on disk), what memory the device has where that is known, and the fixes (docs/models.md).
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

FIXES = ("serve fewer models at once (--max-loaded 1), offload to the CPU on a GPU (--cpu-offload, or "
         "--cpu-offload sequential for the least memory), load it in bfloat16 (--dtype bfloat16) or serve a "
         "GGUF-quantised transformer ('FILE.gguf#config=FOLDER'); docs/models.md: 'Memory options', "
         "'Transformer files and GGUF'")
_ALLOCATOR_WORDS = ("out of memory", "not enough memory", "can't allocate memory", "cannot allocate memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA/MPS out-of-memory errors and the CPU allocator's 'not enough memory' / "can't allocate memory"."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(word in text for word in _ALLOCATOR_WORDS)


@dataclass
class LoadSize:
    """What a load is known to read: its weight files and the dtype it loads them in (filled as it goes)."""

    files: list[str] = field(default_factory=list)
    dtype: str | None = None


def safetensors_parameters(path: str) -> int:
    """The number of values in a safetensors file, from its header."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    return sum(math.prod(t["shape"]) for key, t in header.items() if key != "__metadata__")


def weight_bytes(files: Sequence[str], dtype: str) -> int:
    """The weights' size in bytes at ``dtype``: safetensors by their parameter count, other files on disk."""
    size = torch.empty((), dtype=getattr(torch, dtype)).element_size()
    total = 0
    for path in files:
        if path.endswith(".safetensors"):
            total += safetensors_parameters(path) * size
        else:
            total += os.path.getsize(path)
    return total


def device_memory(device: str) -> str | None:
    """'the GPU has F of T GB free' / 'the machine has F of T GB free'; None where it cannot be told."""
    try:
        if device.startswith("cuda"):
            free, total = torch.cuda.mem_get_info(torch.device(device))
            where = "the GPU"
        elif device == "cpu":
            pages, page = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
            free, total = os.sysconf("SC_AVPHYS_PAGES") * page, pages * page
            where = "this machine"
        else:
            return None
    except (RuntimeError, ValueError, OSError, AttributeError):
        return None
    return f"{where} has {free / 1e9:.1f} of {total / 1e9:.1f} GB free"


def load_message(model_id: str, size: LoadSize, device: str) -> str:
    """The out-of-memory load error: the weights' GB at their dtype, the device's memory, the fixes."""
    need = ""
    if size.files and size.dtype:
        try:
            need = f" needs {weight_bytes(size.files, size.dtype) / 1e9:.3g} GB for its weights in {size.dtype}"
        except (OSError, ValueError, KeyError, struct.error):
            need = ""
    have = device_memory(device)
    return (f"out of memory loading model {model_id!r} on {device}: it{need or ' does not fit'}"
            f"{f' and {have}' if have else ''}; {FIXES}")
