"""Easel's built-in demo model: a toy Stable Diffusion trained on drawn shapes, offline.

Importing this package registers it as the built-in model ``DEMO_ID`` (``builtin_models``): its traits,
``easel.server.demo.model.load_pipeline`` as its loader (it builds the pipeline from the committed
weights) and its fitted preview map. ``easel.server.demo.train`` retrains it; ``easel.server.demo.shapes``
draws its data set and ``easel.server.demo.measure`` grades it. This package file stays import-light (no
torch, nothing of the engine) so the CLI and the library can read constants cheaply.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..builtin_models import BuiltinModel, PreviewMap, register
from ..families import Family
from ..traits import Traits

DEMO_ID = "easel-demo"  #: the built-in demo model's id (what clients and ``--model`` name it)
NATIVE = 64  #: native width and height in pixels (an 8x8x4 latent)
DEFAULT_STEPS = 20  #: denoising steps with the default scheduler (DPM-Solver++ 2M)
DEFAULT_GUIDANCE = 5.0  #: classifier-free guidance scale
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"  #: the committed weights and their config


def _load(device: str, dtype: Any) -> Any:
    from .model import load_pipeline

    return load_pipeline(device, dtype)


def _latent_preview() -> PreviewMap | None:
    from .model import latent_preview

    return latent_preview()


DEMO = register(BuiltinModel(DEMO_ID, Traits(Family.DEMO, (NATIVE, NATIVE), DEFAULT_STEPS, DEFAULT_GUIDANCE),
                             _load, _latent_preview))
