"""FLUX Redux as ComfyUI keeps it: two single files instead of the diffusers folder (redux.py).

``style_models/flux1-redux-dev.safetensors`` holds the embedder (``redux_up``/``redux_down``, the key names of
diffusers' ReduxImageEncoder) and ``clip_vision/sigclip_vision_patch14_384.safetensors`` the SigLIP image
encoder (transformers' SiglipVisionModel key names, with or without ``vision_model.``). Its config comes from the
tensors' shapes, with the heads of the known width (SigLIP so400m: 1152 wide, 16 heads; else one per 64),
and its picture processor is SiglipImageProcessor's (resized to the encoder's side, mean and std 0.5), as in
black-forest-labs/FLUX.1-Redux-dev. An embedder pairs with an encoder whose width it reads.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

_SHAPES: dict[tuple[str, int, int], dict[str, list[int]]] = {}  # tensor shapes by path, size, mtime
_PRE = "vision_model."
_HEADS = {1152: 16}  # SigLIP so400m


def _shapes(path: str) -> dict[str, list[int]]:
    """The tensors' shapes of a ``.safetensors`` file (read once per path, size and mtime); {} if unreadable."""
    from safetensors import safe_open

    try:
        stat = os.stat(path)
        key = (path, stat.st_size, stat.st_mtime_ns)
        if key not in _SHAPES:
            with safe_open(path, framework="pt") as f:
                _SHAPES[key] = {k: f.get_slice(k).get_shape() for k in f.keys()}  # noqa: SIM118
        return _SHAPES[key]
    except Exception:
        return {}


def _files(folder: str) -> list[str]:
    try:
        return sorted(e.path for e in os.scandir(folder) if e.is_file() and e.name.endswith(".safetensors"))
    except OSError:
        return []


def embedder_width(path: str) -> int | None:
    """The encoder width a Redux embedder file reads (None: not one)."""
    shapes = _shapes(path)
    up = shapes.get("redux_up.weight")
    return int(up[1]) if up and "redux_down.weight" in shapes else None


def _bare(key: str) -> str:
    return key[len(_PRE):] if key.startswith(_PRE) else key


def _encoder_shapes(path: str) -> dict[str, list[int]]:
    """A SigLIP vision encoder file's shapes by key without ``vision_model.``; {} for other files (CLIP
    encoders have a class embedding)."""
    shapes = {_bare(k): v for k, v in _shapes(path).items()}
    return shapes if "embeddings.patch_embedding.weight" in shapes and "embeddings.class_embedding" not in shapes \
        else {}


def encoder_width(path: str) -> int | None:
    """The width of a SigLIP vision encoder file (None: not one)."""
    shapes = _encoder_shapes(path)
    return int(shapes["embeddings.patch_embedding.weight"][0]) if shapes else None


def pairs(style_folders: Iterable[str], encoder_folders: Iterable[str]) -> list[tuple[str, str]]:
    """(embedder file, encoder file) for each Redux file in ``style_folders`` with a SigLIP file of its width
    in ``encoder_folders`` (the first, by name)."""
    encoders = [(path, encoder_width(path)) for folder in encoder_folders for path in _files(folder)]
    out = []
    for folder in style_folders:
        for path in _files(folder):
            width = embedder_width(path)
            match = next((e for e, w in encoders if w is not None and w == width), None)
            if width is not None and match is not None:
                out.append((path, match))
    return out


def encoder_config(path: str) -> Any:
    """The SiglipVisionConfig of an encoder file, from its tensors' shapes."""
    from transformers import SiglipVisionConfig

    shapes = _encoder_shapes(path)
    hidden, _, patch, _ = shapes["embeddings.patch_embedding.weight"]
    grid = round(shapes["embeddings.position_embedding.weight"][0] ** 0.5)
    layers = len({k.split(".")[2] for k in shapes if k.startswith("encoder.layers.")})
    return SiglipVisionConfig(hidden_size=hidden, patch_size=patch, image_size=grid * patch, num_hidden_layers=layers,
                              intermediate_size=shapes["encoder.layers.0.mlp.fc1.weight"][0],
                              num_attention_heads=_HEADS.get(hidden, max(1, hidden // 64)),
                              vision_use_head=any(k.startswith("head.") for k in shapes))


def load_prior(embedder: str, encoder: str, dtype: Any) -> Any:
    """A FluxPriorReduxPipeline from the two files."""
    from diffusers import FluxPriorReduxPipeline, ReduxImageEncoder
    from safetensors.torch import load_file
    from transformers import SiglipImageProcessor, SiglipVisionModel

    config = encoder_config(encoder)
    vision = SiglipVisionModel(config)
    prefix = _PRE if next(iter(vision.state_dict())).startswith(_PRE) else ""  # transformers 4 kept it, 5 not
    vision.load_state_dict({prefix + _bare(k): v for k, v in load_file(encoder).items()
                            if not k.endswith("position_ids")}, strict=True)
    state = load_file(embedder)
    embed = ReduxImageEncoder(redux_dim=state["redux_up.weight"].shape[1], txt_in_features=state["redux_down.weight"].shape[0])
    embed.load_state_dict(state, strict=True)
    extractor = SiglipImageProcessor(size={"height": config.image_size, "width": config.image_size})
    return FluxPriorReduxPipeline(image_encoder=vision.to(dtype), feature_extractor=extractor,
                                  image_embedder=embed.to(dtype))
