"""The tiny VAE decoder: diffusers' ``AutoencoderTiny`` with madebyollin's TAESD weights (taesd, taesdxl,
taesd3, taef1; ``Family.tiny_vae`` names each family's), for the final decode.

``easel serve --decoder tiny`` decodes every result with it; ``--live-decoder`` picks live painting's
(``auto``, the default: tiny on the CPU, where the full VAE's decode is more than half of a short job,
else as ``--decoder``). The pipeline returns its latents (``output_type="latent"``) and ``decode``
makes the pixels as the pipeline would with ``pipe.vae`` swapped for the tiny one (diffusers' documented
use: Flux's packed latents unpacked, divided by the tiny VAE's scaling factor, its shift added); the
pipeline's own VAE still *encodes* the image of image-to-image and inpainting jobs.

Where a family's decoder is looked for (``locate``), for ``madebyollin/taesd``:

1. a diffusers folder named like the repository (``taesd/``: config.json and weights) in a models folder's
   ``vae_approx/`` (ComfyUI), ``VAE-approx/`` (A1111) or at its top;
2. the Hugging Face cache (``easel download madebyollin/taesd``);
3. ComfyUI's single decoder file ``vae_approx/taesd_decoder.safetensors`` (the same network; its keys are
   mapped onto the diffusers decoder's). The ``.pth`` files are not read.

A missing decoder is an error where ``--decoder tiny`` (or ``--live-decoder tiny``) asked for it; live
painting's ``auto`` falls back to the full VAE and logs that once per family. A family without a tiny
decoder (the demo, whose VAE is its own) always decodes with its full VAE.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ...client.codes import ErrorCode
from ..families import Family
from ..library.layouts import models_root
from ..settings import DECODERS, LIVE_DECODERS
from . import flow
from .device import DTYPES
from .loading import LoadedModel
from .types import EngineError, EngineJob

log = logging.getLogger(__name__)

SUBFOLDERS = ("vae_approx", "VAE-approx", "")  # in each models folder (after models_root)
WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def locate(family: Family, roots: Sequence[str]) -> str | None:
    """The folder or decoder file of ``family``'s tiny VAE (module docstring's order), or None."""
    repo = family.tiny_vae
    if repo is None:
        return None
    name = repo.rsplit("/", 1)[-1]
    folders = [os.path.join(models_root(root)[0], sub) for root in roots for sub in SUBFOLDERS]
    found = next((os.path.join(f, name) for f in folders if is_tiny_folder(os.path.join(f, name))), None)
    found = found or _cached(repo)
    return found or next((p for f in folders if os.path.isfile(p := os.path.join(f, f"{name}_decoder.safetensors"))),
                         None)


def is_tiny_folder(folder: str) -> bool:
    """A diffusers AutoencoderTiny folder: its config.json names the class, and weights lie beside it."""
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            head = f.read(4096)
    except OSError:
        return False
    return '"AutoencoderTiny"' in head and any(os.path.isfile(os.path.join(folder, w)) for w in WEIGHTS)


def _cached(repo: str) -> str | None:
    """``repo``'s cached snapshot folder, by its config (not ``snapshot_download``, which calls a snapshot
    that ``easel download`` fetched only some files of incomplete)."""
    from huggingface_hub import hf_hub_download

    try:
        folder = os.path.dirname(hf_hub_download(repo, "config.json", local_files_only=True))
    except Exception:  # not in the cache (LocalEntryNotFoundError and friends)
        return None
    return folder if is_tiny_folder(folder) else None


def missing(family: Family, flag: str, roots: Sequence[str]) -> str:
    """What to do when ``family``'s tiny decoder is nowhere (``flag``: the setting that asked for it)."""
    repo = str(family.tiny_vae)
    name = repo.rsplit("/", 1)[-1]
    where = (f"neither in the models folders (as vae_approx/{name}/) nor in the Hugging Face cache" if roots
             else "not in the Hugging Face cache")
    return (f"{flag} tiny: the tiny decoder of {family.label} models ({repo}) is {where}; fetch it once with "
            f"`easel download {repo}`, or start the server with {flag} full")


def load(path: str, latent_channels: int, dtype: torch.dtype, device: str) -> Any:
    """An AutoencoderTiny from a diffusers folder, or from a ComfyUI decoder file (its encoder left unused)."""
    from diffusers import AutoencoderTiny

    if os.path.isdir(path):
        vae = AutoencoderTiny.from_pretrained(path)
    else:
        from safetensors.torch import load_file

        vae = AutoencoderTiny(latent_channels=latent_channels)
        vae.decoder.load_state_dict(decoder_state(load_file(path)))
    return vae.to(device=device, dtype=dtype).eval()


def decoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A TAESD decoder file's weights as diffusers' ``DecoderTiny`` names them: TAESD's ``Sequential`` starts
    with a clamp (no weights) that diffusers does in ``forward``, so its layer N is diffusers' N-1."""
    out = {}
    for key, value in state.items():
        index, _, rest = key.partition(".")
        out[f"layers.{int(index) - 1}.{rest}"] = value
    return out


@torch.no_grad()
def decode(pipe: Any, vae: Any, latents: torch.Tensor, width: int, height: int) -> np.ndarray:
    """Float HxWx3 images in [0, 1] from the latents ``pipe`` returned with ``output_type="latent"``."""
    latents = flow.spatial_latents(pipe, latents, width, height) / vae.config.scaling_factor
    if vae.config.shift_factor:
        latents = latents + vae.config.shift_factor
    image = vae.decode(latents.to(vae.device, vae.dtype), return_dict=False)[0]
    watermark = getattr(pipe, "watermark", None)  # SDXL pipelines mark what their VAE decodes
    if watermark is not None:
        image = watermark.apply_watermark(image)
    return pipe.image_processor.postprocess(image, output_type="np")


class TinyDecoders:
    """The server's decoder settings and the tiny decoders loaded so far (per file, dtype and layout)."""

    def __init__(self, decoder: str = "full", live_decoder: str = "auto", roots: Sequence[str] = (),
                 device: str = "cpu"):
        for name, value, choices in (("decoder", decoder, DECODERS), ("live_decoder", live_decoder, LIVE_DECODERS)):
            if value not in choices:
                raise EngineError(f"unknown {name} {value!r}; use one of {', '.join(choices)}", field=name)
        self.decoder, self.live_decoder = decoder, live_decoder
        self._roots, self._device = list(roots), device
        self._loaded: dict[tuple[str, str, bool], Any] = {}
        self._told: set[Family] = set()
        self._lock = threading.Lock()

    def choice(self, job: EngineJob) -> tuple[str, str | None]:
        """The decoder for ``job`` and the flag that insists on it (None: tiny only where it is at hand)."""
        if job.request is None or not job.request.replace:  # not a live frame
            return self.decoder, "--decoder"
        if self.live_decoder != "auto":
            return self.live_decoder, "--live-decoder"
        if self._device == "cpu":
            return "tiny", None
        return self.decoder, "--decoder"

    def check(self, family: Family) -> None:
        """EngineError at start-up when ``--decoder tiny`` cannot find ``family``'s decoder."""
        if self.decoder == "tiny" and family.tiny_vae and locate(family, self._roots) is None:
            raise EngineError(missing(family, "--decoder", self._roots), field="decoder",
                              code=ErrorCode.MODEL_LOAD_FAILED)

    def for_job(self, job: EngineJob, lm: LoadedModel) -> Any | None:
        """The tiny VAE that decodes ``job`` on ``lm``, or None for the pipeline's own; EngineError when one
        that a setting insists on is missing."""
        choice, flag = self.choice(job)
        family = lm.traits.family
        if choice != "tiny" or family.tiny_vae is None:
            return None
        path = locate(family, self._roots)
        if path is None:
            if flag is not None:
                raise EngineError(missing(family, flag, self._roots), field="model", code=ErrorCode.MODEL_LOAD_FAILED)
            if family not in self._told:
                self._told.add(family)
                log.info("live painting decodes %s with the full VAE: its tiny decoder is not here (easel download "
                         "%s)", family.label, family.tiny_vae)
            return None
        with self._lock:
            key = (path, lm.dtype, lm.channels_last)
            vae = self._loaded.get(key)
            if vae is None:
                vae = self._loaded[key] = self._load(path, family, lm)
            return vae

    def _load(self, path: str, family: Family, lm: LoadedModel) -> Any:
        try:
            vae = load(path, family.latent_channels, DTYPES[lm.dtype], self._device)
        except Exception as exc:
            raise EngineError(f"could not load the tiny decoder {path}: {type(exc).__name__}: {exc}; fetch it again "
                              f"with `easel download {family.tiny_vae}`", field="model",
                              code=ErrorCode.MODEL_LOAD_FAILED) from None
        if lm.channels_last:
            vae.to(memory_format=torch.channels_last)
        log.info("tiny decoder for %s: %s", family.label, path)
        return vae

    def close(self) -> None:
        with self._lock:
            self._loaded.clear()
