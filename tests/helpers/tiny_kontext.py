"""A tiny random-weight FLUX.1 Kontext pipeline for tests, built offline: the tiny FLUX.1-dev of
tiny_flow_models.py saved as a ``FluxKontextPipeline`` (the same components; Kontext adds the picture's
latents as context tokens at run time), so folders are detected as FLUX.1 Kontext by model_index.json."""

from __future__ import annotations

import os
import shutil

import torch

from helpers.tiny_flow_models import build_tiny_flux

__all__ = ["build_tiny_kontext"]


def build_tiny_kontext(folder: str | os.PathLike) -> str:
    """Save a tiny FLUX.1 Kontext folder (model_index ``_class_name`` FluxKontextPipeline)."""
    from diffusers import FluxKontextPipeline

    folder = os.fspath(folder)
    flux = build_tiny_flux(folder + ".flux")
    pipe = FluxKontextPipeline.from_pretrained(flux, dtype=torch.float32)
    pipe.save_pretrained(folder)
    shutil.rmtree(flux)
    return folder
