"""A tiny random FLUX Redux (diffusers' ``FluxPriorReduxPipeline`` folder) for the tiny FLUX.1 pipelines.

``build_tiny_redux(folder)`` saves a SiglipVisionModel (32 wide, 64 px pictures in 8 px patches: 64 image
tokens), its SiglipImageProcessor and a ReduxImageEncoder whose output is the tiny FLUX.1's T5 width
(``T5_DIM``), in black-forest-labs/FLUX.1-Redux-dev's layout (model_index.json, image_encoder/,
feature_extractor/, image_embedder/), without text encoders as that repository has none.
``comfyui_redux_files(folder, models)`` copies its two weight files where ComfyUI keeps them:
``style_models/`` (the embedder) and ``clip_vision/`` (the SigLIP encoder).
"""

from __future__ import annotations

import os
import shutil

import torch

from helpers.tiny_flow_models import T5_DIM

__all__ = ["build_tiny_redux", "comfyui_redux_files"]


def build_tiny_redux(folder: str | os.PathLike, seed: int = 0, heads: int = 2) -> str:
    """Save a tiny random FluxPriorReduxPipeline to ``folder`` (its encoder with ``heads`` attention heads);
    returns its path."""
    from diffusers import FluxPriorReduxPipeline, ReduxImageEncoder
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(seed)
    encoder = SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                                   num_attention_heads=heads, image_size=64, patch_size=8))
    embedder = ReduxImageEncoder(redux_dim=32, txt_in_features=T5_DIM)
    for param in embedder.parameters():  # tokens as large as the prompt's, so a reference steers visibly
        torch.nn.init.normal_(param, std=2.0)
    extractor = SiglipImageProcessor(size={"height": 64, "width": 64})
    pipe = FluxPriorReduxPipeline(image_encoder=encoder, feature_extractor=extractor, image_embedder=embedder)
    pipe.save_pretrained(os.fspath(folder))
    return os.fspath(folder)


def comfyui_redux_files(folder: str | os.PathLike, models: str | os.PathLike) -> tuple[str, str]:
    """Copy a saved Redux folder's embedder to ``models/style_models/`` and its encoder to
    ``models/clip_vision/`` as single files (ComfyUI's names; the encoder's keys under ``vision_model.``,
    as in ComfyUI's file); returns their paths."""
    from safetensors.torch import load_file, save_file

    folder, models = os.fspath(folder), os.fspath(models)
    embedder = os.path.join(models, "style_models", "flux1-redux-dev.safetensors")
    encoder = os.path.join(models, "clip_vision", "sigclip_vision_patch14_384.safetensors")
    for path in (embedder, encoder):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    shutil.copy(os.path.join(folder, "image_embedder", "diffusion_pytorch_model.safetensors"), embedder)
    state = load_file(os.path.join(folder, "image_encoder", "model.safetensors"))
    save_file({k if k.startswith("vision_model.") else "vision_model." + k: v for k, v in state.items()}, encoder)
    return embedder, encoder
