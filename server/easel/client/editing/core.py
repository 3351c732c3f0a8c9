"""Choosing the mode, naming layers, pixel bytes, and turning editor state into a request."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from ..connection import new_job_id
from ..protocol import GenerateRequest, Image
from ..send_region import send_region

TXT2IMG, IMG2IMG, INPAINT = "txt2img", "img2img", "inpaint"


def choose_mode(has_selection: bool, strength: float) -> str:
    """Selection → regenerate it; no selection and strength < 1 → refine the canvas; else generate."""
    if has_selection:
        return INPAINT
    return IMG2IMG if strength < 1.0 else TXT2IMG


def layer_name(prompt: str, seed: int, max_chars: int = 40) -> str:
    """A result layer's name: the prompt (shortened) and the seed, e.g. ``Easel: a red circle [1234]``."""
    text = " ".join(prompt.split()) or "(no prompt)"
    if len(text) > max_chars:
        text = text[: max_chars - 1].rstrip() + "…"
    return f"Easel: {text} [{seed}]"


def bgra_to_rgba(data: bytes | bytearray) -> bytes:
    """Swap the B and R channels of 8-bit pixels (Krita's memory order is BGRA)."""
    out = bytearray(data)
    out[0::4] = data[2::4]
    out[2::4] = data[0::4]
    return bytes(out)


rgba_to_bgra = bgra_to_rgba  # the swap is its own inverse


def selection_bounds(mask: bytes, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Bounds (x, y, w, h) of the non-zero pixels of a gray8 mask, or None when it is empty."""
    rows = [y for y in range(height) if any(mask[y * width : (y + 1) * width])]
    if not rows:
        return None
    top, bottom = rows[0], rows[-1]
    left, right = width, -1
    for y in range(top, bottom + 1):
        row = mask[y * width : (y + 1) * width]
        first = next((i for i, v in enumerate(row) if v), None)
        if first is None:
            continue
        last = width - 1 - next(i for i, v in enumerate(reversed(row)) if v)
        left, right = min(left, first), max(right, last)
    return left, top, right - left + 1, bottom - top + 1


def crop_bytes(data: bytes, width: int, channels: int, x: int, y: int, w: int, h: int) -> bytes:
    """Crop a row-major pixel buffer to the rectangle (x, y, w, h)."""
    stride, start = width * channels, x * channels
    return b"".join(data[(y + r) * stride + start : (y + r) * stride + start + w * channels] for r in range(h))


@dataclass
class Params:
    """What the painter set in the plugin's UI; each field is the request field of its name."""

    prompt: str
    negative_prompt: str = ""
    strength: float = 1.0
    steps: int | None = None
    guidance: float | None = None
    seed: int = -1
    batch: int = 1
    model: str | None = None
    scheduler: str | None = None


@dataclass
class EditorState:
    """The document as the plugin read it: RGBA pixels of the visible canvas (or a region)."""

    width: int  # document size
    height: int
    rgba: bytes | None = None  # the canvas region to send (None for plain generate)
    region: tuple[int, int, int, int] | None = None  # x, y, w, h of ``rgba`` in the document
    selection: bytes | None = None  # gray8 mask for ``region``, or None when nothing is selected

    @property
    def box(self) -> tuple[int, int, int, int]:
        """What a request planned from this state covers: ``region``, else (text to image) the whole canvas."""
        return self.region or (0, 0, self.width, self.height)


@dataclass
class PlannedRequest:
    mode: str
    request: GenerateRequest
    image: Image | None = None
    mask: Image | None = None
    notes: list[str] = field(default_factory=list)
    attachments: dict[str, Image] = field(default_factory=dict)  # the images the request's lists name


def plan_request(state: EditorState, params: Params) -> PlannedRequest:
    """Build the request for the mode the document implies (see ``choose_mode``)."""
    has_selection = state.selection is not None and any(state.selection)
    mode = choose_mode(has_selection, params.strength)
    common = {f.name: getattr(params, f.name) for f in fields(Params) if f.name != "strength"}  # request fields
    common.update(canvas_width=state.width, canvas_height=state.height)
    if mode == TXT2IMG or state.rgba is None:
        request = GenerateRequest(job=new_job_id(), width=state.width, height=state.height, **common)
        return PlannedRequest(TXT2IMG, request)
    x, y, w, h = state.box
    request = GenerateRequest(job=new_job_id(), strength=params.strength, x=x, y=y, **common)
    image = Image.rgba(w, h, state.rgba)
    mask = Image.gray(w, h, state.selection) if mode == INPAINT and state.selection is not None else None
    return PlannedRequest(mode, request, image, mask)


Box = tuple[int, int, int, int]  # x, y, width, height


@dataclass(frozen=True)
class Growth:
    """Where things go when an expand job's result grows the canvas (docs/protocol.md): the new canvas size,
    ``dx, dy`` where the old canvas's origin lands in it, and ``place`` for the result layer."""

    width: int
    height: int
    dx: int
    dy: int

    def place(self, x: int, y: int) -> tuple[int, int]:
        """A result layer's offset in the grown canvas from its ``x, y`` in the old one (negative where it
        reaches left of or above the old canvas)."""
        return x + self.dx, y + self.dy


def grown_canvas(width: int, height: int, expand) -> Growth:
    """The canvas ``width`` x ``height`` grown by ``expand`` = [LEFT, TOP, RIGHT, BOTTOM] pixels (None: unchanged).
    Krita: ``doc.resizeImage(-dx, -dy, width, height)``; GIMP: ``image.resize(width, height, dx, dy)``."""
    left, top, right, bottom = expand or (0, 0, 0, 0)
    return Growth(width + left + right, height + top + bottom, left, top)


def read_plan(width: int, height: int, selection_box: Box | None, strength: float) -> tuple[str, Box | None]:
    """What a plugin reads from the document before ``plan_request``: the mode and the region.

    ``selection_box`` is the selection's bounds in the document (None or empty: no selection).
    Text to image reads nothing (region None); refine reads the whole canvas; regenerating a
    selection reads the selection's context region (``imaging.send_region``), not the canvas.
    """
    has_selection = selection_box is not None and selection_box[2] > 0 and selection_box[3] > 0
    mode = choose_mode(has_selection, strength)
    if mode == TXT2IMG:
        return mode, None
    if mode == INPAINT:
        return mode, tuple(send_region(selection_box, (width, height)))
    return mode, (0, 0, width, height)
