"""What one generation takes and gives: decoded inputs, result layers, seeds.

Shared by ``generation`` (one pass over a planned work region) and ``upscale`` (tiled refinement),
so that imports go one way: ``generation`` -> ``upscale`` -> ``work``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Layer:
    """One result image as a layer: RGBA pixels, its document offset and the seed that made it."""

    rgba: np.ndarray  # HxWx4 uint8
    x: int
    y: int
    seed: int


@dataclass
class GenerationOutput:
    """A finished job: its layers, the parameters really used (for PNG metadata) and timings."""

    layers: list[Layer]
    parameters: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class Inputs:
    """Decoded, validated inputs of a request."""

    mode: str
    image: np.ndarray | None = None  # HxWx4 uint8
    mask: np.ndarray | None = None  # HxW uint8
    control: np.ndarray | None = None  # HxWx4 uint8, ControlNet guide (docs/features.md)


def pick_seeds(seed: int, batch: int) -> list[int]:
    """Seed -1 draws a random one; image i of a batch uses seed + i."""
    base = random.randrange(0, 2**32) if seed == -1 else seed
    return [(base + i) % 2**63 for i in range(batch)]
