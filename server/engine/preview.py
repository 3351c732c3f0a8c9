"""Cheap step previews: a linear latent -> RGB map, fitted per VAE at load time.

``fit`` encodes one small image of solid colour blocks with the model's own VAE encoder and solves
``rgb ~= latent @ W + b`` by least squares on the latent pixels inside each block (a (C+1) x 3
matrix). ``render`` then costs one tiny matmul per step, no VAE decode; the preview is the latent
size upscaled ``PREVIEW_SCALE`` times (width/4 x height/4 for SD/SDXL). The preview shows the
current (noisy) latents of the first image of the batch.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)

PREVIEW_SCALE = 2
_GRID = 6  # 6 x 6 colour blocks, each 4 x 4 latent pixels


class LatentPreview:
    """Maps latents (B, C, h, w) to a small RGB PIL image."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, scale: int = PREVIEW_SCALE):
        self.weight = np.asarray(weight, np.float32)  # (C, 3)
        self.bias = np.asarray(bias, np.float32)  # (3,)
        self.scale = scale
        self._on: dict[tuple[str, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def render(self, latents: torch.Tensor) -> Image.Image:
        """Preview of ``latents[0]``: (h * scale, w * scale) RGB."""
        lat = latents[0].detach()
        key = (str(lat.device), torch.float32)
        if key not in self._on:
            self._on[key] = (torch.from_numpy(self.weight).to(lat.device), torch.from_numpy(self.bias).to(lat.device))
        weight, bias = self._on[key]
        rgb = torch.einsum("chw,cr->hwr", lat.float(), weight) + bias
        pixels = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        image = Image.fromarray(pixels, "RGB")
        if self.scale != 1:
            image = image.resize((image.width * self.scale, image.height * self.scale), Image.Resampling.BILINEAR)
        return image

    @classmethod
    def fit(cls, vae: torch.nn.Module, vae_scale: int) -> LatentPreview | None:
        """Fit the map for ``vae``; None (no previews) if the VAE's latents are not (B, C, h, w)."""
        try:
            colours, image = _colour_blocks(vae_scale)
            latents = _encode(vae, image)
            if not torch.isfinite(latents).all():  # fp16 VAEs that need upcasting (SDXL)
                latents = _encode(copy.deepcopy(vae).float(), image)
            lat = latents[0].float().cpu().numpy()  # (C, H, W)
            c, hh, ww = lat.shape
            per = hh // _GRID  # latent pixels per block
            rows, targets = [], []
            for by in range(_GRID):
                for bx in range(_GRID):
                    inner = lat[:, by * per + 1: (by + 1) * per - 1, bx * per + 1: (bx + 1) * per - 1]
                    inner = inner.reshape(c, -1).T
                    rows.append(inner)
                    targets.append(np.repeat(colours[by * _GRID + bx][None], len(inner), 0))
            a = np.concatenate(rows).astype(np.float64)
            y = np.concatenate(targets).astype(np.float64)
            a1 = np.concatenate([a, np.ones((len(a), 1))], 1)
            solution, *_ = np.linalg.lstsq(a1, y, rcond=None)
            return cls(solution[:c], solution[c])
        except Exception as exc:  # previews are optional: never fail a load for them
            log.warning("no step previews for this model: fitting the latent->RGB map failed: %s", exc)
            return None


def _colour_blocks(vae_scale: int) -> tuple[np.ndarray, np.ndarray]:
    """36 colours (cube corners + fixed random ones) as a grid image; block = 4 latent pixels wide."""
    corners = np.array([[r, g, b] for r in (0, 1) for g in (0, 1) for b in (0, 1)], np.float32)
    rest = np.random.default_rng(1234).uniform(0, 1, (_GRID * _GRID - len(corners), 3)).astype(np.float32)
    colours = np.concatenate([corners, rest])
    block = 4 * vae_scale
    grid = colours.reshape(_GRID, _GRID, 3)
    image = np.repeat(np.repeat(grid, block, 0), block, 1)  # (H, W, 3) in [0, 1]
    return colours, image


@torch.no_grad()
def _encode(vae: torch.nn.Module, image: np.ndarray) -> torch.Tensor:
    param = next(vae.parameters())
    x = torch.from_numpy(image).permute(2, 0, 1)[None] * 2 - 1
    x = x.to(device=param.device, dtype=param.dtype)
    latents = vae.encode(x).latent_dist.mean
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    scale = getattr(vae.config, "scaling_factor", 1.0) or 1.0
    return (latents - shift) * scale
