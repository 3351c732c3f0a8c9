"""Tiny GGUF transformer files written with the ``gguf`` package, as city96's FLUX.1 GGUFs are laid out:
norms, biases and small tensors unquantised, the linear layers' weights optionally Q8_0."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch


def write_gguf(state: Mapping[str, torch.Tensor], path: str | os.PathLike, arch: str = "flux",
               quantise: bool = False) -> str:
    """Write ``state`` to ``path`` in GGUF; ``quantise``: 2-D ``.weight`` tensors whose rows are whole
    32-value blocks become Q8_0 (the rest stay F32). Returns the path."""
    import gguf

    writer = gguf.GGUFWriter(os.fspath(path), arch)
    for name, tensor in state.items():
        data = tensor.detach().to(torch.float32).contiguous().numpy()
        if quantise and name.endswith(".weight") and data.ndim == 2 and data.shape[1] % 32 == 0:
            q8 = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(name, gguf.quants.quantize(data, q8), raw_dtype=q8)
        else:
            writer.add_tensor(name, np.ascontiguousarray(data))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return os.fspath(path)
