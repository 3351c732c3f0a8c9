"""Models that ship with Easel: a small registry the engine's catalog asks like any other source.

A package that ships a model registers a ``BuiltinModel`` when it is imported (``easel.server.demo``
registers ``easel-demo``). An entry says what the model is before it loads (``traits``), how to load it
(``load(device, torch_dtype)`` -> a diffusers pipeline) and, optionally, its fitted latent->RGB preview
map. A name that is a registered id is that model (engine/refs.py), ahead of files and hub ids.
Import-light (no torch, nothing of the engine): the callables import what they need when called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .traits import Traits

#: A latent->RGB map for previews: ``rgb[0..1] = latents @ matrix + bias`` (matrix: channels x 3).
PreviewMap = tuple[list[list[float]], list[float]]


@dataclass(frozen=True)
class BuiltinModel:
    """One built-in model: its id, its traits before loading, its loader and its preview map."""

    id: str
    traits: Traits
    load: Callable[[str, Any], Any]  # (device, torch dtype) -> pipeline, on that device in that dtype
    latent_preview: Callable[[], PreviewMap | None] | None = None  # None: the VAE's generic map


_MODELS: dict[str, BuiltinModel] = {}


def register(model: BuiltinModel) -> BuiltinModel:
    """Add ``model`` (a later registration of the same id replaces the earlier one); returns it."""
    _MODELS[model.id] = model
    return model


def find(model_id: str) -> BuiltinModel | None:
    """The built-in model with this id, else None."""
    return _MODELS.get(model_id)


def fallback() -> BuiltinModel | None:
    """The model served when nothing else is: the first one registered."""
    return next(iter(_MODELS.values()), None)
