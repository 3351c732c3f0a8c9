"""Variation seeds: the initial noise is a spherical blend of two seeds' noise (A1111's "variation seed").

``noise = slerp(noise(seed), noise(variation_seed), strength)`` per image; image i of a batch blends
``seed + i`` with ``variation_seed + i``. Strength 0 is the plain seed's result and strength 1 the
variation seed's (both bit-exact: they run as plain jobs with that seed). In between:

* text to image (and inpaint at strength 1): the blended noise goes in as ``latents=``, drawn exactly
  as the pipeline draws it, and the generators then continue from the same state, so ancestral
  schedulers' per-step noise still comes from ``seed``;
* image to image and inpaint below strength 1: the job's fresh scheduler gets an ``add_noise`` that
  swaps the pipeline's noise for the blend (the same blend every step, as inpainting re-noises the
  kept area with the same noise each step).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from . import flow

DOT_THRESHOLD = 0.9995  # nearly parallel noises: plain linear blend (slerp is unstable there)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation per batch item (over all of its values); exact at t = 0 and t = 1."""
    if t <= 0:
        return a
    if t >= 1:
        return b
    flat_a, flat_b = a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).double()
    dot = (flat_a / flat_a.norm(dim=1, keepdim=True) * flat_b / flat_b.norm(dim=1, keepdim=True)).sum(1)
    dot = dot.clamp(-1.0, 1.0)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    wa = torch.where(dot.abs() > DOT_THRESHOLD, 1 - t, torch.sin((1 - t) * omega) / so)
    wb = torch.where(dot.abs() > DOT_THRESHOLD, torch.full_like(dot, t), torch.sin(t * omega) / so)
    out = wa[:, None] * flat_a + wb[:, None] * flat_b
    return out.reshape(a.shape).to(a.dtype)


def generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per image (as the runner seeds them), so results match on every device."""
    return [torch.Generator("cpu").manual_seed(s & 0xFFFF_FFFF_FFFF_FFFF) for s in seeds]


def latent_shape(pipe: Any, batch: int, width: int, height: int) -> tuple[int, int, int, int]:
    """The shape of the initial noise the pipeline would draw."""
    config = pipe.vae.config
    channels = int(getattr(config, "latent_channels", None) or getattr(config, "z_dim", None) or 4)  # z_dim: Qwen
    scale = int(pipe.vae_scale_factor)
    if flow.is_flux(pipe):  # Flux draws 2 * (size // 16) latent px, then packs 2x2
        return (batch, channels, 2 * (height // (scale * 2)), 2 * (width // (scale * 2)))
    return (batch, channels, height // scale, width // scale)


def skip_noise(pipe: Any, gens: list[torch.Generator], width: int, height: int) -> None:
    """Advance ``gens`` past one draw of initial-noise shape (as the VAE's latent sample draws it)."""
    from diffusers.utils.torch_utils import randn_tensor

    randn_tensor(latent_shape(pipe, len(gens), width, height), generator=gens, device=torch.device("cpu"),
                 dtype=pipe.vae.dtype)


def blended_latents(pipe: Any, gens: list[torch.Generator], variation_seeds: Sequence[int], strength: float,
                    width: int, height: int) -> torch.Tensor:
    """Initial noise for ``latents=``; draws ``gens`` exactly as the pipeline would have."""
    from diffusers.utils.torch_utils import randn_tensor

    shape = latent_shape(pipe, len(gens), width, height)
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    dtype = denoiser.dtype if denoiser is not None else torch.float32
    device = pipe._execution_device
    a = randn_tensor(shape, generator=gens, device=device, dtype=dtype)
    b = randn_tensor(shape, generator=generators(variation_seeds), device=device, dtype=dtype)
    return slerp(a, b, strength)


def blend_scheduler_noise(scheduler: Any, variation_seeds: Sequence[int], strength: float,
                          pack: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
    """Make ``scheduler.add_noise`` (flow matching: ``scale_noise``) use the blend of the pipeline's
    noise with the variation seeds' noise.

    Only for a scheduler made for this one call (the runner makes a fresh one per call). ``pack``
    (Flux) packs a blend for the packed copy of the noise that Flux inpainting re-noises with.
    """
    if hasattr(scheduler, "scale_noise"):
        _blend_scale_noise(scheduler, variation_seeds, strength, pack)
        return
    from diffusers.utils.torch_utils import randn_tensor

    original = scheduler.add_noise
    memo: dict[str, Any] = {}

    def add_noise(samples: torch.Tensor, noise: torch.Tensor, timesteps: Any) -> torch.Tensor:
        if memo.get("source") is not noise:
            other = randn_tensor(tuple(noise.shape), generator=generators(variation_seeds),
                                 device=noise.device, dtype=noise.dtype)
            memo["source"], memo["blend"] = noise, slerp(noise, other, strength)
        return original(samples, memo["blend"], timesteps)

    scheduler.add_noise = add_noise


def _blend_scale_noise(scheduler: Any, variation_seeds: Sequence[int], strength: float,
                       pack: Callable[[torch.Tensor], torch.Tensor] | None) -> None:
    from diffusers.utils.torch_utils import randn_tensor

    original = scheduler.scale_noise
    memo: dict[str, Any] = {}

    def scale_noise(sample: torch.Tensor, timestep: Any, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            return original(sample, timestep, noise)
        if noise.ndim == 3 and pack is not None and "blend" in memo:  # Flux's packed copy of the same noise
            if memo.get("packed_source") is not noise:
                memo["packed_source"], memo["packed"] = noise, pack(memo["blend"])
            return original(sample, timestep, memo["packed"])
        if memo.get("source") is not noise:
            other = randn_tensor(tuple(noise.shape), generator=generators(variation_seeds),
                                 device=noise.device, dtype=noise.dtype)
            memo["source"], memo["blend"] = noise, slerp(noise, other, strength)
        return original(sample, timestep, memo["blend"])

    scheduler.scale_noise = scale_noise
