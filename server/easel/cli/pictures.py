"""The pictures ``easel generate`` writes: whole pictures, or result layers with their document offset.

With ``--image`` the server returns a layer: the regenerated part only, at an offset in the
image. ``easel generate`` lays it over the input (``flatten``: pixels outside the selection's
blend stay bit-exact) and writes the whole picture, the way A1111's API answers; ``--layer``
writes the layer itself (PNG only), its offset in the text chunks ``easel.x``/``easel.y`` and the
standard ``oFFs`` chunk. The format follows the suffix of ``--out`` (``FORMATS``; PNG without one).
Every file carries the A1111-style ``parameters`` text of the server's stored copies: a PNG in
its ``parameters`` text chunk, a JPEG or WebP in the EXIF UserComment (``UNICODE``, UTF-16 BE,
as A1111 writes it). JPEG has no alpha: a transparent picture is laid on white.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..client.connection import Result, ResultImage
from ..client.protocol import Image

#: ``--out`` suffix -> Pillow format; no suffix writes PNG.
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
QUALITY = 95  #: JPEG and WebP quality
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class OutputError(ValueError):
    """``--out`` cannot be written as asked; the message names the flag and the fix."""


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


def output_format(out: Path) -> str:
    """The Pillow format the suffix of ``out`` names; OutputError for one Easel does not write."""
    suffix = out.suffix.lower()
    if not suffix:
        return "PNG"
    if suffix not in FORMATS:
        names = ", ".join(FORMATS)
        raise OutputError(f"--out {out}: cannot write {suffix} files; end the name with one of {names}")
    return FORMATS[suffix]


def check_output(out: Path, count: int, layer: bool) -> None:
    """Raise OutputError unless every file of ``output_paths(out, count)`` can be written: a known
    format (PNG for ``layer``), a folder that exists or can be made, and that takes new files."""
    fmt = output_format(out)
    if layer and fmt != "PNG":
        raise OutputError(f"--layer writes a PNG (transparency and the oFFs offset chunk); give --out a .png "
                          f"name instead of {out.name}")
    folder = Path(os.path.abspath(out)).parent
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise OutputError(f"--out {out}: {existing} is a file, not a folder; choose another --out path")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".easel-check-"):
            pass
    except OSError as exc:
        raise OutputError(f"--out {out}: cannot create files in {existing} ({exc.strerror}); choose a --out "
                          "path in a folder you can write to") from None
    for path in output_paths(out, count):
        if path.is_dir():
            raise OutputError(f"--out {path} is a folder; give a file name, e.g. --out {path / 'picture.png'}")
        if path.exists() and not os.access(path, os.W_OK):
            raise OutputError(f"--out {path} exists and cannot be overwritten (read-only); remove it or choose "
                              "another --out path")


def write_pictures(result: Result, out: Path, canvas: Image | None, layer: bool = False,
                   margins: tuple[int, int, int, int] = (0, 0, 0, 0)) -> list[Written]:
    """Write each result image to its ``output_paths`` file: laid over ``canvas`` (the sent image, grown by
    ``margins`` left, top, right, bottom for ``--expand``) unless ``layer``; without a canvas (text to image,
    upscale) the result is the whole picture."""
    import numpy as np
    from PIL import Image as PILImage

    from ..server.imaging.compose import LayerResult, flatten
    from ..server.results import parameters_text

    fmt = output_format(out)
    base = _decode(canvas) if canvas is not None and not layer else None
    written = []
    for path, item in zip(output_paths(out, len(result.images)), result.images, strict=True):
        patch = _decode(item.image).convert("RGBA")
        picture = patch
        if base is not None:
            left, top, right, bottom = margins
            grown = np.pad(np.asarray(base.convert("RGBA")), ((top, bottom), (left, right), (0, 0)))
            full = flatten(grown, LayerResult(np.asarray(patch), item.x, item.y), (-left, -top))
            opaque = "A" not in base.getbands() and bool((full[..., 3] == 255).all())
            picture = PILImage.fromarray(full[..., :3] if opaque else full, "RGB" if opaque else "RGBA")
        text = parameters_text(result.parameters, item.seed, picture.width, picture.height)
        offset = (item.x, item.y) if base is None else None
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_picture(picture, fmt, text, offset))
        written.append(Written(path, item, picture.width, picture.height))
    return written


def encode_picture(picture, fmt: str, parameters: str, offset: tuple[int, int] | None = None) -> bytes:
    """``picture`` (a PIL image) as ``fmt`` bytes carrying ``parameters``; a PNG also carries
    ``offset`` (the layer's place in the picture) as ``easel.x``/``easel.y`` text and an ``oFFs`` chunk."""
    from PIL import ExifTags
    from PIL import Image as PILImage
    from PIL.PngImagePlugin import PngInfo

    buf = io.BytesIO()
    if fmt == "PNG":
        info = PngInfo()
        info.add_text("parameters", parameters)
        if offset is not None:
            info.add_text("easel.x", str(offset[0]))
            info.add_text("easel.y", str(offset[1]))
        picture.save(buf, "PNG", pnginfo=info)
        return buf.getvalue() if offset is None else with_png_offset(buf.getvalue(), *offset)
    exif = PILImage.Exif()  # big-endian, like A1111's piexif; UserComment bytes are stored as given
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.UserComment] = b"UNICODE\0" + parameters.encode("utf-16-be")
    if fmt == "JPEG" and picture.mode != "RGB":
        rgba = picture.convert("RGBA")
        flat = PILImage.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        picture = flat
    picture.save(buf, fmt, exif=exif, quality=QUALITY)
    return buf.getvalue()


def with_png_offset(png: bytes, x: int, y: int) -> bytes:
    """``png`` with an ``oFFs`` chunk (x, y as signed 32-bit, unit 0 = pixels) right after IHDR.

    Pillow's ``PngInfo.add`` silently drops public chunks it does not know, oFFs among them."""
    if not png.startswith(PNG_SIGNATURE) or png[12:16] != b"IHDR":
        raise ValueError("not a PNG starting with IHDR")
    ihdr_end = 8 + 12 + struct.unpack(">I", png[8:12])[0]  # signature, then length + type + data + CRC
    body = b"oFFs" + struct.pack(">iiB", x, y, 0)
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    return png[:ihdr_end] + chunk + png[ihdr_end:]


def _decode(image: Image):  # -> PIL.Image.Image
    from PIL import Image as PILImage

    mode = {"rgba": "RGBA", "gray": "L"}.get(image.format)
    if mode:
        return PILImage.frombytes(mode, (image.width, image.height), image.data)
    pil = PILImage.open(io.BytesIO(image.data))
    pil.load()
    return pil
