"""Control-layer guides made from a picture ("From image"): canny edges, depth, normal, segmentation, pose,
line art and soft edges.

``run(kind, rgb, roots)`` turns an HxWx3 uint8 picture into the guide a ControlNet of that kind expects
(HxWx3 uint8, the same size). ``KINDS`` says what each kind makes; kinds this server cannot make are
in ``UNAVAILABLE`` with the reason, so a client asking for them gets one clear error. Depth, normal,
segmentation and pose run transformers' own models (``models``), line art and soft edges controlnet-aux's
annotators (``annotators``), their weights found offline in the models folders or the Hugging Face
cache; docs/features.md "From image".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ...client.codes import ErrorCode, PreprocessKind
from ..engine.types import EngineError
from . import annotators, models

_MISSING = annotators.missing()
#: the protocol's kinds (``PreprocessKind``) this server cannot make, and why: controlnet-aux's when it is not installed
UNAVAILABLE = {kind: _MISSING for kind in annotators.DETECTORS} if _MISSING else {}
#: kind -> what its guide shows, for the kinds this server makes
KINDS = {k.value: k.doc[0] for k in PreprocessKind if k.value not in UNAVAILABLE}
Report = Callable[[str], None]  # a progress message ("loading …", "running …")


def check_kind(kind: object) -> str:
    """``kind`` if this server makes it; EngineError(field="kind") naming the choices otherwise."""
    if isinstance(kind, str) and kind in KINDS:
        return kind
    if isinstance(kind, str) and kind in UNAVAILABLE:
        raise EngineError(f"kind {kind!r} is not available on this server: {UNAVAILABLE[kind]}; use one of "
                          f"{', '.join(KINDS)}", field="kind", code=ErrorCode.PREPROCESSOR_UNAVAILABLE)
    raise EngineError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}", field="kind")


def run(kind: str, rgb: np.ndarray, roots: Sequence[str] = (), report: Report = lambda _: None) -> np.ndarray:
    """The ``kind`` guide of ``rgb`` (HxWx3 uint8): HxWx3 uint8 of the same size.

    ``roots``: the models folders to look for the weights in (then the HF cache)."""
    check_kind(kind)
    rgb = np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)
    if kind == "canny":
        out = canny(rgb)
    elif kind in annotators.DETECTORS:
        out = annotators.predict(kind, rgb, roots, report)
    else:
        out = models.predict(kind, rgb, roots, report)
    assert out.shape == rgb.shape and out.dtype == np.uint8, (out.shape, out.dtype)
    return out


def canny(rgb: np.ndarray, low: int = 100, high: int = 200) -> np.ndarray:
    """White edges on black, as ControlNet canny models were trained on (the thresholds of their annotator)."""
    import cv2  # only this kind needs OpenCV; importing it is not free

    edges = cv2.Canny(rgb, low, high)
    return np.repeat(edges[..., None], 3, axis=2)


__all__ = ["KINDS", "UNAVAILABLE", "canny", "check_kind", "run"]
