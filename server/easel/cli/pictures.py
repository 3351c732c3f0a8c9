"""The PNGs ``easel generate`` writes: whole pictures, or result layers with their document offset.

With ``--image`` the server returns a layer: the regenerated part only, at an offset in the
image. ``easel generate`` lays it over the input (``flatten``: pixels outside the selection's
blend stay bit-exact) and writes the whole picture, the way A1111's API answers; ``--layer``
writes the layer itself, its offset in the text chunks ``easel.x``/``easel.y`` (and the standard
``oFFs`` chunk). Every file carries the A1111-style ``parameters`` text of the server's stored copies.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path

from ..client.connection import Result, ResultImage
from ..client.protocol import Image


@dataclass(frozen=True)
class Written:
    path: Path
    item: ResultImage
    width: int
    height: int


def output_paths(out: Path, count: int) -> list[Path]:
    """OUT.png for one image; OUT-1.png, OUT-2.png … for a batch."""
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i}{out.suffix or '.png'}") for i in range(1, count + 1)]


def write_pictures(result: Result, out: Path, canvas: Image | None, layer: bool = False) -> list[Written]:
    """Write each result image to its ``output_paths`` file: laid over ``canvas`` (the sent image)
    unless ``layer``; without a canvas (text to image, upscale) the result is the whole picture."""
    import numpy as np
    from PIL import Image as PILImage
    from PIL.PngImagePlugin import PngInfo

    from ..server.imaging.compose import LayerResult, flatten
    from ..server.results import parameters_text

    base = _decode(canvas) if canvas is not None and not layer else None
    written = []
    for path, item in zip(output_paths(out, len(result.images)), result.images, strict=True):
        patch = _decode(item.image).convert("RGBA")
        picture = patch
        if base is not None:
            full = flatten(np.asarray(base.convert("RGBA")), LayerResult(np.asarray(patch), item.x, item.y))
            opaque = "A" not in base.getbands() and bool((full[..., 3] == 255).all())
            picture = PILImage.fromarray(full[..., :3] if opaque else full, "RGB" if opaque else "RGBA")
        info = PngInfo()
        info.add_text("parameters", parameters_text(result.parameters, item.seed, picture.width, picture.height))
        if base is None:
            info.add_text("easel.x", str(item.x))
            info.add_text("easel.y", str(item.y))
            info.add(b"oFFs", struct.pack(">iiB", item.x, item.y, 0))  # offset in pixels
        path.parent.mkdir(parents=True, exist_ok=True)
        picture.save(path, "PNG", pnginfo=info)
        written.append(Written(path, item, picture.width, picture.height))
    return written


def _decode(image: Image):  # -> PIL.Image.Image
    from PIL import Image as PILImage

    mode = {"rgba": "RGBA", "gray": "L"}.get(image.format)
    if mode:
        return PILImage.frombytes(mode, (image.width, image.height), image.data)
    pil = PILImage.open(io.BytesIO(image.data))
    pil.load()
    return pil
