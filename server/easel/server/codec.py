"""Pixels in and out of protocol images (server side: Pillow + numpy)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image as PILImage

from ..client.protocol import Image, ProtocolError


def decode_rgba(image: Image, name: str = "image") -> np.ndarray:
    """An HxWx4 uint8 array from any protocol image; undecodable bytes name the field."""
    if image.format == "rgba":
        return np.frombuffer(image.data, np.uint8).reshape(image.height, image.width, 4).copy()
    if image.format == "gray":
        gray = np.frombuffer(image.data, np.uint8).reshape(image.height, image.width)
        return np.dstack([gray, gray, gray, np.full_like(gray, 255)])
    return np.asarray(_open(image, name).convert("RGBA")).copy()


def decode_mask(image: Image, name: str = "mask") -> np.ndarray:
    """An HxW uint8 mask (255 = regenerate). RGBA masks use their alpha if present, else luminance."""
    if image.format == "gray":
        return np.frombuffer(image.data, np.uint8).reshape(image.height, image.width).copy()
    if image.format == "rgba":
        rgba = np.frombuffer(image.data, np.uint8).reshape(image.height, image.width, 4)
        return _mask_from_rgba(rgba)
    pil = _open(image, name)
    if pil.mode in ("RGBA", "LA", "PA"):
        return _mask_from_rgba(np.asarray(pil.convert("RGBA")))
    return np.asarray(pil.convert("L")).copy()


def _mask_from_rgba(rgba: np.ndarray) -> np.ndarray:
    alpha = rgba[..., 3]
    if alpha.min() < 255:
        return alpha.copy()
    return np.asarray(PILImage.fromarray(np.ascontiguousarray(rgba[..., :3])).convert("L")).copy()


def _open(image: Image, name: str) -> PILImage.Image:
    try:
        pil = PILImage.open(io.BytesIO(image.data))
        pil.load()
    except Exception as exc:  # Pillow raises many types for bad data
        raise ProtocolError(f"{name}: the {image.format} bytes cannot be decoded ({exc}); send a valid "
                            "PNG/WebP or raw RGBA", field=name) from None
    if pil.size != (image.width, image.height):
        raise ProtocolError(f"{name}: header says {image.width}x{image.height} but the file is "
                            f"{pil.size[0]}x{pil.size[1]}", field=name)
    return pil


def encode(pixels: np.ndarray, fmt: str) -> Image:
    """Encode an HxWx4 (or HxWx3) uint8 array in the client's chosen format."""
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        pixels = np.dstack([pixels, np.full(pixels.shape[:2], 255, np.uint8)])
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    height, width = pixels.shape[:2]
    if fmt == "rgba":
        return Image.rgba(width, height, pixels.tobytes())
    buf = io.BytesIO()
    pil = PILImage.fromarray(pixels, "RGBA")
    if fmt == "webp":
        pil.save(buf, "WEBP", lossless=True, method=0)
        return Image(width, height, "webp", buf.getvalue())
    pil.save(buf, "PNG", compress_level=1)
    return Image(width, height, "png", buf.getvalue())
