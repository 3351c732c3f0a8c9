"""Grade how well a demo pipeline follows prompts (used by training and by the tests)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from . import measure

#: The fixed prompt set: every colour x shape the measures can grade.
EVAL_COLOURS = ("red", "orange", "yellow", "green", "blue", "purple")
EVAL_SHAPES = ("circle", "square", "triangle")


@dataclass
class Graded:
    """One generated picture and what the measures saw in it."""

    prompt: str
    colour: str
    shape: str
    seed: int
    image: Image.Image
    got_colour: str | None
    got_shape: str | None


def generate(pipe, prompts: list[str], seeds: list[int], steps: int, guidance: float) -> list[list[Image.Image]]:
    """For each seed, one picture per prompt (a batch per seed); returns ``[seed][prompt]``."""
    out = []
    for seed in seeds:
        gen = torch.Generator("cpu").manual_seed(seed)
        out.append(pipe(prompts, num_inference_steps=steps, guidance_scale=guidance, generator=gen).images)
    return out


def grade(pipe, seeds: list[int], steps: int, guidance: float,
          colours=EVAL_COLOURS, shapes=EVAL_SHAPES) -> tuple[list[Graded], dict[str, float]]:
    """Generate "a {colour} {shape}" for every pair and seed; return each result and the accuracies."""
    pairs = [(c, s) for s in shapes for c in colours]
    prompts = [f"{'an' if c[0] in 'aeiou' else 'a'} {c} {s}" for c, s in pairs]
    results: list[Graded] = []
    for seed, images in zip(seeds, generate(pipe, prompts, seeds, steps, guidance)):
        for (c, s), prompt, img in zip(pairs, prompts, images):
            mask = measure.foreground(img)
            results.append(Graded(prompt, c, s, seed, img, measure.colour_of(img, mask), measure.shape_of(img, mask)))
    n = max(len(results), 1)
    acc = {
        "colour": sum(r.got_colour == r.colour for r in results) / n,
        "shape": sum(r.got_shape == r.shape for r in results) / n,
        "both": sum(r.got_colour == r.colour and r.got_shape == r.shape for r in results) / n,
    }
    return results, acc


def grid(images: list[Image.Image], columns: int, scale: int = 2) -> Image.Image:
    """Tile pictures row by row, enlarged ``scale`` times (nearest neighbour)."""
    w, h = images[0].size
    rows = (len(images) + columns - 1) // columns
    sheet = Image.new("RGB", (w * columns, h * rows), "white")
    for i, im in enumerate(images):
        sheet.paste(im, ((i % columns) * w, (i // columns) * h))
    return sheet.resize((sheet.width * scale, sheet.height * scale), Image.NEAREST)
