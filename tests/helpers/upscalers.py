"""Tiny random upscalers spandrel recognises (Real-ESRGAN Compact, ESRGAN/RRDBNet), saved as a painter has them."""

from __future__ import annotations

from pathlib import Path

import torch


def _arch(module: str, name: str) -> type:
    from easel.server import imports

    return getattr(imports.subpackage("spandrel", f"architectures.{module}"), name)


def compact(scale: int = 4, seed: int = 0) -> torch.nn.Module:
    """A Real-ESRGAN Compact (SRVGGNet) with 8 features and 2 convolutions: it sees 4 px around a pixel."""
    torch.manual_seed(seed)
    model = _arch("Compact", "Compact")(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=scale)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.2)  # small residual over the nearest-neighbour base: outputs stay mostly within 0..1
    return model.eval()


def esrgan(scale: int = 4, seed: int = 0) -> torch.nn.Module:
    """An ESRGAN (RRDBNet) with 8 filters and one block (new-style ``conv_first`` keys)."""
    torch.manual_seed(seed)
    return _arch("ESRGAN", "ESRGAN")(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=scale).eval()


def save(model: torch.nn.Module, path: Path, wrap: str | None = None) -> Path:
    """``model``'s state dict at ``path`` (.safetensors, or a .pth pickle, optionally wrapped as ``{wrap: …}``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({wrap: state} if wrap else state, path)
    return path
