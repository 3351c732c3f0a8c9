"""Cheap step previews: a linear latent -> RGB map per VAE, ``rgb ~= latent @ W + b``.

The stock SD 1.x/2.x and SDXL VAEs use published factors (those of ComfyUI's latent previews), at no
cost. Any other VAE gets a fit at load time: ``fit`` encodes one small image of solid colour blocks
with the model's own VAE encoder and solves for W, b by least squares on the latent pixels inside
each block (a 128 px encode: milliseconds on a GPU, 2-4 s for a full-size SD VAE on 2 CPU cores).
``render`` then costs one tiny matmul per step, no VAE decode (about 1 ms for a 64x64 latent,
4 ms for 128x128, on one CPU core). The preview is the latent size upscaled ``PREVIEW_SCALE``
times (width/4 x height/4 for SD/SDXL) and shows the current (noisy) latents of the first image.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)

PREVIEW_SCALE = 2
_SD_VAE_BLOCKS = [128, 256, 512, 512]
# Published factors map the pipeline's (scaled) latents to RGB in [-1, 1]; rescaled here to [0, 1].
_KNOWN = {
    0.18215: ([[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721],
               [-0.2120, -0.2616, -0.7177]], [0.0, 0.0, 0.0]),  # SD 1.x / 2.x VAE
    0.13025: ([[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068], [0.1076, 0.1111, -0.0362],
               [-0.3165, -0.2492, -0.2188]], [0.1084, -0.0175, -0.0011]),  # SDXL VAE
}
_GRID = 4  # 4 x 4 colour blocks, each 4 x 4 latent pixels (a 128 px image for SD)


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
    def for_vae(cls, vae: torch.nn.Module, vae_scale: int) -> LatentPreview | None:
        """Published factors for the stock SD/SDXL VAEs, else a fit."""
        config = vae.config
        known = _KNOWN.get(getattr(config, "scaling_factor", None))
        if (known is not None and list(getattr(config, "block_out_channels", [])) == _SD_VAE_BLOCKS
                and getattr(config, "latent_channels", 4) == 4 and not getattr(config, "shift_factor", None)):
            return cls(np.array(known[0]) / 2, (np.array(known[1]) + 1) / 2)
        return cls.fit(vae, vae_scale)

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
    """16 colours (cube corners + fixed random ones) as a grid image; block = 4 latent pixels wide."""
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
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    if mean is not None and std is not None:  # a video VAE (Qwen-Image's): one frame, per-channel normalisation
        latents = vae.encode(x[:, :, None]).latent_dist.mean[:, :, 0]
        return (latents - x.new_tensor(mean)[:, None, None]) / x.new_tensor(std)[:, None, None]
    latents = vae.encode(x).latent_dist.mean
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    scale = getattr(vae.config, "scaling_factor", 1.0) or 1.0
    return (latents - shift) * scale
