"""Line art and soft edge guides from controlnet-aux's annotators, with lllyasviel/Annotators' weights.

controlnet-aux (Easel's ``annotators`` extra) is the maintained home of ControlNet's annotators,
but its package ``__init__`` imports every one of them and with them torchvision, timm and
scikit-image. Its ``lineart`` and ``hed`` subpackages need only OpenCV, torch, einops, Pillow and
huggingface_hub; where the package import fails (no torchvision for this torch build), ``subpackage``
imports them without running that ``__init__``.

Weights are looked for in each models folder as ``annotators/Annotators``, ``preprocessors/Annotators``
or ``Annotators`` (laid out like the hub repository: the ``.pth`` files at its top), then in the Hugging
Face cache; ``easel download lllyasviel/Annotators`` fetches just the files these kinds use.
"""

from __future__ import annotations

import importlib.util
import os
import types
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ...client.codes import ErrorCode
from .. import imports
from ..engine.types import EngineError
from .models import SUBFOLDERS, holding

REPO = "lllyasviel/Annotators"
#: kind -> (controlnet-aux subpackage, its detector class, the weight files it loads from REPO)
DETECTORS = {
    "lineart": ("lineart", "LineartDetector", ("sk_model.pth", "sk_model2.pth")),
    "softedge": ("hed", "HEDdetector", ("ControlNetHED.pth",)),
}
LIBRARY = "controlnet_aux"
#: how to get controlnet-aux (Easel is installed from its checkout or a wheel, not from a package index)
INSTALL = ("install controlnet-aux: Easel's `annotators` extra (`pip install '.[annotators]'` in its checkout), or "
           "`pip install --no-deps controlnet-aux einops` where torchvision cannot be installed")
MAX_RESOLUTION = 512  # the annotators' own detect resolution; smaller pictures are not enlarged
MIN_RESOLUTION = 64  # controlnet-aux rounds sizes to multiples of 64


def missing() -> str | None:
    """Why these kinds cannot be made here (the library is not installed), or None."""
    absent = [name for name in (LIBRARY, "einops") if importlib.util.find_spec(name) is None]
    if not absent:
        return None
    return f"its annotator comes from controlnet-aux, and {' and '.join(absent)} is not installed on this server; {INSTALL}"


def files_needed() -> list[str]:
    """The files of REPO that these kinds load (what ``easel download`` fetches)."""
    return [name for _, _, files in DETECTORS.values() for name in files]


def subpackage(name: str) -> types.ModuleType:
    """``controlnet_aux.NAME``, imported without the package's ``__init__`` where that fails (``imports``)."""
    return imports.subpackage(LIBRARY, name)


def locate(kind: str, roots: Sequence[str]) -> str:
    """The folder holding ``kind``'s weight files; EngineError(field="kind") saying how to get them."""
    files = DETECTORS[kind][2]
    name = REPO.rsplit("/", 1)[-1]
    for root in roots:
        for sub in SUBFOLDERS:
            folder = os.path.join(root, sub, name)
            if all(os.path.isfile(os.path.join(folder, f)) for f in files):
                return folder
    cached = [_cached_file(f) for f in files]
    if all(cached):
        return os.path.dirname(cached[0])
    where = f"models folders ({', '.join(roots)}) as annotators/{name}, nor in " if roots else ""
    raise EngineError(
        f"kind {kind!r} is not available on this server: its weights ({', '.join(files)}) are neither in the "
        f"{where}the Hugging Face cache; fetch them once with `easel download {REPO}` and ask again",
        field="kind", code=ErrorCode.PREPROCESSOR_UNAVAILABLE)


def _cached_file(name: str) -> str | None:
    """REPO's file ``name`` in the Hugging Face cache, or None."""
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(REPO, name, local_files_only=True)
    except Exception:  # not in the cache (LocalEntryNotFoundError and friends)
        return None


def predict(kind: str, rgb: np.ndarray, roots: Sequence[str], report: Callable[[str], None]) -> np.ndarray:
    """``kind``'s guide of ``rgb`` (HxWx3 uint8): white lines on black, HxWx3 uint8 of the same size."""
    import cv2

    folder = locate(kind, roots)
    height, width = rgb.shape[:2]
    resolution = max(MIN_RESOLUTION, min(MAX_RESOLUTION, height, width))
    with holding(f"{folder}#{kind}", f"{kind} annotator", lambda: _load(kind, folder), report) as detector:
        report(f"running {kind}")
        guide = detector(rgb, detect_resolution=resolution, image_resolution=resolution, output_type="np")
    guide = cv2.resize(np.ascontiguousarray(guide), (width, height), interpolation=cv2.INTER_LINEAR)
    return np.repeat(guide[..., None], 3, axis=2) if guide.ndim == 2 else guide


def _load(kind: str, folder: str) -> Any:
    """``kind``'s controlnet-aux detector with the weights in ``folder``."""
    module, detector, _ = DETECTORS[kind]
    try:
        return getattr(subpackage(module), detector).from_pretrained(folder)
    except ImportError as exc:
        raise EngineError(f"kind {kind!r} is not available on this server: controlnet-aux's {module} annotator "
                          f"cannot be imported ({exc}); {INSTALL}",
                          field="kind", code=ErrorCode.PREPROCESSOR_UNAVAILABLE) from None
    except Exception as exc:  # broken or partial files, another network's weights
        raise EngineError(f"kind {kind!r}: the weights in {folder} cannot be loaded ({type(exc).__name__}: "
                          f"{str(exc)[:200]}); fetch them again with `easel download {REPO}`", field="kind",
                          code=ErrorCode.PREPROCESSOR_UNAVAILABLE) from None


__all__ = ["DETECTORS", "INSTALL", "REPO", "files_needed", "locate", "missing", "predict", "subpackage"]
