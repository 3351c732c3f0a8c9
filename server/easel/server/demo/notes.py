"""What the server tells a painter when the demo model cannot do what a big picture needs.

The toy paints one shape in a small picture (``NATIVE``). A big canvas gets that picture
enlarged (``hires: auto`` skips its second pass: ``Family.second_pass_auto``) and a tiled upscale
refines tiles of that size; without a word, both look like Easel failing. These sentences go out as
the job's progress message and in the result's ``parameters.notes`` (docs/protocol.md), for the
families that are toys (``Family.toy``).
Import-light (no torch), like the package.
"""

from __future__ import annotations

from collections.abc import Iterable


def _size(extent: Iterable[int]) -> str:
    width, height = extent
    return f"{width}×{height}"


def enlarged_sketch(work: Iterable[int], size: Iterable[int]) -> str:
    """The note for a picture well above the work size whose second pass was skipped."""
    return (f"enlarged sketch: the demo model paints at {_size(work)}; the second pass that adds detail at "
            f"{_size(size)} needs a real model (docs/demo-model.md)")


def toy_upscale(tile: Iterable[int]) -> str:
    """The note for a tiled upscale on the demo model."""
    return (f"little detail added: the demo model refines {_size(tile)} tiles and knows only simple shapes; "
            "upscale with a real model (docs/demo-model.md)")
