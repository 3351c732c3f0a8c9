"""A tiny random FLUX Redux (diffusers' ``FluxPriorReduxPipeline`` folder) for the tiny FLUX.1 pipelines.

``build_tiny_redux(folder)`` saves a SiglipVisionModel (32 wide, 64 px pictures in 8 px patches: 64 image
tokens), its SiglipImageProcessor and a ReduxImageEncoder whose output is the tiny FLUX.1's T5 width
(``T5_DIM``), in black-forest-labs/FLUX.1-Redux-dev's layout (model_index.json, image_encoder/,
feature_extractor/, image_embedder/), without text encoders as that repository has none.
"""

from __future__ import annotations

import os

import torch

from helpers.tiny_flow_models import T5_DIM

__all__ = ["build_tiny_redux"]


def build_tiny_redux(folder: str | os.PathLike, seed: int = 0) -> str:
    """Save a tiny random FluxPriorReduxPipeline to ``folder``; returns its path."""
    from diffusers import FluxPriorReduxPipeline, ReduxImageEncoder
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(seed)
    encoder = SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                                   num_attention_heads=2, image_size=64, patch_size=8))
    embedder = ReduxImageEncoder(redux_dim=32, txt_in_features=T5_DIM)
    for param in embedder.parameters():  # tokens as large as the prompt's, so a reference steers visibly
        torch.nn.init.normal_(param, std=2.0)
    extractor = SiglipImageProcessor(size={"height": 64, "width": 64})
    pipe = FluxPriorReduxPipeline(image_encoder=encoder, feature_extractor=extractor, image_embedder=embedder)
    pipe.save_pretrained(os.fspath(folder))
    return os.fspath(folder)
