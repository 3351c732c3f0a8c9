"""The pictures of the edit-model tests (FLUX.2 Klein, Qwen-Image-Edit): a 96x64 gradient to edit, a
reference picture of another size, a selection, and a reference layer of a job."""

from __future__ import annotations

import numpy as np
from PIL import Image

from easel.client.items import Control
from helpers.engine_checks import gradient

W, H = 96, 64  # multiples of the 16 px grid, not square: results come back at exactly this size


def picture() -> Image.Image:
    return gradient(W).crop((0, 0, W, H))


def reference() -> Image.Image:
    """A reference picture of another size than the job's."""
    return gradient(80).transpose(Image.Transpose.ROTATE_90).crop((0, 0, 80, 64))


def selection() -> Image.Image:
    mask = np.zeros((H, W), np.uint8)
    mask[16:48, 24:72] = 255
    return Image.fromarray(mask, "L")


def with_reference(strength: float = 1.0) -> dict:
    """An edit job's fields for one reference layer holding ``reference()``."""
    return {"controls": [Control(kind="reference", image="ref", strength=strength)], "attached": {"ref": reference()}}
