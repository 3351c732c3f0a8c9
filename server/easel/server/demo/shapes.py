"""The demo model's data set: procedurally drawn shapes with matching captions.

One picture is one flat-coloured shape on a plain background, drawn at 2x and box-filtered to
64x64 for soft edges. Its caption names the colour and shape and, sometimes, the size, the
position and the background ("a small blue triangle on the left on a black background").
``clutter`` draws caption-less scenes (several shapes, any colours) that only the VAE sees, so
it also reconstructs pictures unlike the training captions (img2img sketches, inpaint inputs).
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64  #: native picture size in pixels
_SS = 2  #: supersampling factor for drawing

#: Shape colours: name -> RGB. Hues are spread round the wheel so a hue measure tells them apart.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 135, 20),
    "yellow": (240, 215, 25),
    "green": (35, 165, 55),
    "blue": (35, 75, 215),
    "purple": (135, 45, 185),
}
#: Background colours: name -> RGB. "white" is the default when a caption names none.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 240),
    "black": (22, 22, 26),
    "grey": (128, 128, 128),
}
#: Shapes and how often each is drawn (the three the tests grade come more often).
SHAPES: dict[str, float] = {"circle": 0.25, "square": 0.25, "triangle": 0.25, "star": 0.125, "ring": 0.125}
#: Position phrase -> (x range, y range) of the shape's centre, as fractions of the picture.
POSITIONS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "on the left": ((0.0, 0.36), (0.0, 1.0)),
    "on the right": ((0.64, 1.0), (0.0, 1.0)),
    "at the top": ((0.0, 1.0), (0.0, 0.36)),
    "at the bottom": ((0.0, 1.0), (0.64, 1.0)),
    "in the centre": ((0.4, 0.6), (0.4, 0.6)),
}
_POSITION_SYNONYMS = {"in the centre": ["in the centre", "in the center", "in the middle"]}
SIZES = {"small": (8, 11), "": (11, 17), "big": (17, 22)}  #: size word -> half-extent range (px)
_SIZE_SYNONYMS = {"big": ["big", "large"], "small": ["small"], "": [""]}

#: Every word a caption can use; the tokenizer makes each one a single token.
WORDS: list[str] = sorted(
    {"a", "an", "the", "of", "on", "in", "at", "and", "with", "shape", "picture", "drawing", "background",
     "left", "right", "top", "bottom", "centre", "center", "middle", "small", "big", "large"}
    | set(COLOURS) | set(BACKGROUNDS) | {"gray"} | set(SHAPES)
)


@dataclass(frozen=True)
class Spec:
    """One training picture: what is drawn, where, and its caption."""

    colour: str
    shape: str
    size: str  # "", "small" or "big"
    position: str  # "" (anywhere) or a key of POSITIONS
    background: str
    cx: float
    cy: float
    r: float
    rgb: tuple[int, int, int]
    caption: str


def jitter(rgb: tuple[int, int, int], rng: np.random.Generator, amount: float = 1.0) -> tuple[int, int, int]:
    """A nearby shade: hue +-4 degrees, saturation and value +-0.07 (scaled by ``amount``)."""
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    h = (h + amount * rng.uniform(-4, 4) / 360) % 1.0
    s = float(np.clip(s + amount * rng.uniform(-0.07, 0.07), 0, 1))
    v = float(np.clip(v + amount * rng.uniform(-0.07, 0.07), 0, 1))
    return tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(h, s, v))  # type: ignore[return-value]


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def make_caption(colour: str, shape: str, size: str, position: str, background: str, rng: np.random.Generator) -> str:
    """Compose a caption; the caller passes "" for attributes to leave out."""
    words = [w for w in (rng.choice(_SIZE_SYNONYMS[size]) if size else "", colour, shape or "shape") if w]
    parts = [" ".join([_article(words[0])] + words)]
    tail = []
    if position:
        tail.append(str(rng.choice(_POSITION_SYNONYMS.get(position, [position]))))
    if background:
        bg = "gray" if background == "grey" and rng.random() < 0.3 else background
        tail.append(f"on a {bg} background")
    if len(tail) == 2 and rng.random() < 0.5:
        tail.reverse()
    return " ".join(parts + tail)


def random_spec(rng: np.random.Generator) -> Spec:
    """Draw a random picture spec and a caption that is true of it (some attributes left unsaid)."""
    colour = str(rng.choice(list(COLOURS)))
    shape = str(rng.choice(list(SHAPES), p=list(SHAPES.values())))
    size = str(rng.choice(list(SIZES), p=[0.2, 0.6, 0.2]))
    r = float(rng.uniform(*SIZES[size]))
    position = str(rng.choice([""] + list(POSITIONS), p=[0.4, 0.12, 0.12, 0.12, 0.12, 0.12]))
    background = str(rng.choice(list(BACKGROUNDS), p=[0.7, 0.15, 0.15]))
    lo, hi = r + 2, SIZE - r - 2
    (x0, x1), (y0, y1) = POSITIONS.get(position, ((0.0, 1.0), (0.0, 1.0)))
    cx = float(rng.uniform(max(lo, x0 * SIZE), max(min(hi, x1 * SIZE), max(lo, x0 * SIZE))))
    cy = float(rng.uniform(max(lo, y0 * SIZE), max(min(hi, y1 * SIZE), max(lo, y0 * SIZE))))
    said_bg = background if background != "white" or rng.random() < 0.15 else ""
    said_size = size if rng.random() < 0.8 else ""
    said_colour = colour if rng.random() > 0.07 else ""
    said_shape = shape if rng.random() > 0.05 else ""
    caption = make_caption(said_colour, said_shape, said_size, position, said_bg, rng)
    return Spec(colour, shape, size, position, background, cx, cy, r, jitter(COLOURS[colour], rng), caption)


def draw_shape(d: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill: tuple, bg: tuple) -> None:
    """Draw one shape of half-extent ``r`` centred at (cx, cy) in supersampled pixels."""
    if shape == "circle":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        q = 0.9 * r
        d.rectangle((cx - q, cy - q, cx + q, cy + q), fill=fill)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    elif shape == "star":
        pts = []
        for k in range(10):
            rad = 1.1 * r if k % 2 == 0 else 0.45 * r
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + 0.1 * r + rad * math.sin(a)))
        d.polygon(pts, fill=fill)
    elif shape == "ring":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        q = 0.55 * r
        d.ellipse((cx - q, cy - q, cx + q, cy + q), fill=bg)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def draw(spec: Spec, rng: np.random.Generator | None = None) -> Image.Image:
    """Render a spec as a 64x64 RGB picture."""
    bg = BACKGROUNDS[spec.background]
    if rng is not None:
        bg = jitter(bg, rng, 0.3)
    img = Image.new("RGB", (SIZE * _SS, SIZE * _SS), bg)
    draw_shape(ImageDraw.Draw(img), spec.shape, spec.cx * _SS, spec.cy * _SS, spec.r * _SS, spec.rgb, bg)
    return img.resize((SIZE, SIZE), Image.BOX)


def clutter(rng: np.random.Generator) -> Image.Image:
    """A caption-less scene for VAE training: 1-4 shapes in any colours on any plain colour."""
    bg = tuple(int(c) for c in rng.integers(0, 256, 3))
    img = Image.new("RGB", (SIZE * _SS, SIZE * _SS), bg)
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 5))):
        r = float(rng.uniform(4, 26)) * _SS
        cx, cy = (float(v) * _SS for v in rng.uniform(0, SIZE, 2))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw_shape(d, str(rng.choice(list(SHAPES))), cx, cy, r, fill, bg)
    return img.resize((SIZE, SIZE), Image.BOX)


def batch(rng: np.random.Generator, n: int, clutter_frac: float = 0.0) -> tuple[np.ndarray, list[str]]:
    """``n`` pictures as uint8 (n, 64, 64, 3) and their captions ("" for clutter scenes)."""
    out = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
    caps: list[str] = []
    for i in range(n):
        if clutter_frac and rng.random() < clutter_frac:
            out[i] = np.asarray(clutter(rng))
            caps.append("")
        else:
            spec = random_spec(rng)
            out[i] = np.asarray(draw(spec, rng))
            caps.append(spec.caption)
    return out, caps
