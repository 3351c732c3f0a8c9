"""Selection modes as pure numpy functions: which mode, the pre-fill, the colour match, the grown canvas.

The modes (docs/imaging.md, "Selection modes"), after krita-ai-diffusion's inpaint modes:

* ``refine``: today's selection work, nothing added (also every strength below 1 in ``auto``);
* ``fill``: new content continuing the surroundings: the hole is pre-filled (OpenCV Telea), denoised
  at full strength, colour matched;
* ``add``: a new object: the hole is pre-filled neutral grey, the request's prompt and strength, no colour match;
* ``remove``: the hole is pre-filled (Telea) and denoised without a prompt, colour and contrast matched;
* ``expand``: outpainting: the selected (or grown, transparent) part is filled from the rest by pull-push,
  denoised at full strength, colour matched;
* ``background``: a new background: the selection (or the whole picture) minus the subject a background-removal
  model finds (``background_selection``), pre-filled and colour matched as for fill; the subject stays
  (``keep_subject``).

The new-content modes widen the default feather with the strength they run at (``feather_factor``).
"""

from __future__ import annotations

import numpy as np

from .geometry import Bounds, Extent
from .masks import composite_mask

REFINE, FILL, ADD, REMOVE, EXPAND, BACKGROUND = "refine", "fill", "add", "remove", "expand", "background"
#: Modes that paint new content in the hole (pre-fill, wider feather); refine keeps the old pixels as context.
NEW_CONTENT = (FILL, ADD, REMOVE, EXPAND, BACKGROUND)
#: Modes whose result is colour matched to its surroundings (an added object is meant to differ).
COLOUR_MATCHED = (FILL, REMOVE, EXPAND, BACKGROUND)
#: Modes whose colour match also matches contrast: removing wants the background back, so a plain band
#: flattens what the model left there; fill and expand keep the contrast of what they paint (only its
#: colour cast is corrected), or a prompt's subject on a plain background would be flattened away.
CONTRAST_MATCHED = (REMOVE,)
#: Modes that always denoise at full strength over their pre-fill.
FULL_STRENGTH = (FILL, EXPAND, BACKGROUND)
NEUTRAL = 127  #: the grey an ``add`` hole is pre-filled with
TELEA_RADIUS = 3  #: OpenCV inpaint's neighbourhood (px)
MAX_STD_RATIO = 4.0  #: the colour match scales contrast by at most this much
MIN_BAND = 16  #: fewer band pixels than this: no colour match (too few to measure)
#: A background-removal model's matte at or below the first level is background (0), at or above the second
#: the subject (255), linear between: a confident model's subject is kept bit-exact, its edge stays soft.
SUBJECT_LEVELS = (16, 240)


def choose_mode(requested: str, strength: float, selection: Bounds | None, canvas: Extent,
                margins: tuple[int, int, int, int] = (0, 0, 0, 0)) -> str:
    """The mode a job runs in. ``selection`` and ``canvas`` in the same coordinates (None: no selection).

    ``auto``: ``expand`` with margins; ``refine`` without a selection or below full strength; ``expand``
    when the selection spans the canvas's whole width or height (krita-ai-diffusion's rule); else ``fill``.
    """
    if requested != "auto":
        return requested
    if any(margins):
        return EXPAND
    if selection is None or strength < 1.0:
        return REFINE
    if selection.width >= canvas.width or selection.height >= canvas.height:
        return EXPAND
    return FILL


def feather_factor(mode: str, strength: float) -> float:
    """How much wider than the rule's default the feather is: ``0.5 + strength`` for new content (1.5x at
    full strength, where the new part differs most from the old), 1 for ``refine`` (today's feather)."""
    return 0.5 + strength if mode in NEW_CONTENT else 1.0


def prefill(rgba: np.ndarray, selection: np.ndarray, mode: str) -> np.ndarray:
    """``rgba`` (HxWx4 uint8) with its selected pixels (``selection`` > 0) pre-filled for ``mode``.

    ``fill``/``remove``/``background``: OpenCV's Telea inpainting from the unselected opaque pixels (made opaque);
    ``add``: neutral grey (opaque); ``expand``: made transparent, so that the pull-push fill of
    ``compose.prepare`` fills them from the rest; ``refine``: unchanged.
    """
    if mode == REFINE:
        return rgba
    out = rgba.copy()
    hole = selection > 0
    if mode == EXPAND:
        out[..., 3][hole] = 0
        return out
    if mode == ADD:
        out[hole] = (NEUTRAL, NEUTRAL, NEUTRAL, 255)
        return out
    import cv2

    unknown = hole | (rgba[..., 3] == 0)
    if unknown.all():
        out[unknown] = (NEUTRAL, NEUTRAL, NEUTRAL, 255)
        return out
    filled = cv2.inpaint(np.ascontiguousarray(rgba[..., :3]), unknown.astype(np.uint8) * 255, TELEA_RADIUS,
                         cv2.INPAINT_TELEA)
    out[..., :3][unknown] = filled[unknown]
    out[..., 3][unknown] = 255
    return out


def colour_match(generated: np.ndarray, original: np.ndarray, selection: np.ndarray, feather: int,
                 contrast: bool = True, exclude: np.ndarray | None = None) -> np.ndarray:
    """``generated`` (HxWx3, the region) with its new part matched to its surroundings, per channel.

    The blend band is where the compositing mask is non-zero outside the selection, over opaque original
    pixels: there the generated and the original picture should agree. Each channel of the new part
    (compositing mask > 0) is shifted so that its band mean equals the original's and, with ``contrast``,
    scaled so that its band spread does too (the scale capped at ``MAX_STD_RATIO``); every other pixel is
    returned unchanged, so compositing keeps the pixels outside the blend bit-exact. A band of fewer than
    ``MIN_BAND`` pixels changes nothing. ``exclude`` (HxW bool): pixels left out of the band (a kept subject).
    """
    cmask = composite_mask(selection, feather)
    band = (cmask > 0) & (selection == 0) & (original[..., 3] == 255)
    if exclude is not None:
        band &= ~exclude
    if int(band.sum()) < MIN_BAND:
        return generated
    gen = generated.astype(np.float64)
    orig = original[..., :3].astype(np.float64)
    g_mean, g_std = gen[band].mean(axis=0), gen[band].std(axis=0)
    o_mean, o_std = orig[band].mean(axis=0), orig[band].std(axis=0)
    ratio = np.minimum(np.divide(o_std, g_std, out=np.ones_like(o_std), where=g_std > 1e-6), MAX_STD_RATIO)
    if not contrast:
        ratio = np.ones_like(ratio)
    matched = np.clip(np.rint((gen - g_mean) * ratio + o_mean), 0, 255).astype(np.uint8)
    return np.where((cmask > 0)[..., None], matched, generated)


def grow_canvas(rgba: np.ndarray, mask: np.ndarray | None, margins: tuple[int, int, int, int]
                ) -> tuple[np.ndarray, np.ndarray]:
    """The image grown by ``margins`` (left, top, right, bottom) of transparent pixels, and its selection:
    the new margins (255) plus the sent selection where it was."""
    left, top, right, bottom = margins
    h, w = rgba.shape[:2]
    grown = np.zeros((h + top + bottom, w + left + right, 4), np.uint8)
    grown[top:top + h, left:left + w] = rgba
    sel = np.full(grown.shape[:2], 255, np.uint8)
    sel[top:top + h, left:left + w] = 0 if mask is None else mask
    return grown, sel


def subject_levels(found: np.ndarray) -> np.ndarray:
    """A background-removal model's matte (HxW uint8) stretched by ``SUBJECT_LEVELS``: 0 background, 255 subject."""
    low, high = SUBJECT_LEVELS
    stretched = (found.astype(np.float64) - low) * 255.0 / (high - low)
    return np.clip(np.rint(stretched), 0, 255).astype(np.uint8)


def background_selection(selection: np.ndarray, subject: np.ndarray) -> np.ndarray:
    """What a ``background`` job regenerates (HxW uint8): the selection times the subject's inverse matte."""
    product = selection.astype(np.uint32) * (255 - subject.astype(np.uint32))
    return ((product + 127) // 255).astype(np.uint8)


def keep_subject(rgba: np.ndarray, original: np.ndarray, subject: np.ndarray) -> np.ndarray:
    """A result layer's pixels (HxWx4, straight alpha) with the subject kept: alpha at most ``255 - subject``
    (the blend's outward feather never reaches into it), and the original colour where alpha becomes 0, so
    laying the layer over ``original`` (HxWx4, the same pixels) leaves the whole subject bit-exact."""
    alpha = np.minimum(rgba[..., 3], 255 - subject)
    rgb = np.where((alpha > 0)[..., None], rgba[..., :3], original[..., :3])
    return np.dstack([rgb, alpha]).astype(np.uint8)
