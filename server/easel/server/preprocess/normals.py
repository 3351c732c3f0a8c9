"""Normal maps from a depth map: the classic ControlNet "normal from depth" (docs/features.md "From image").

The slopes of the relative inverse depth (near = high) give each pixel's surface normal
(x, y, z) = (d/dx, d/dy, 2π), normalised and written as RGB = (n + 1) * 127.5: the colours the SD 1.5
normal ControlNets read (ScanNet's protocol, as controlnet-aux's MiDaS normal map without its
background cut): a surface facing the viewer is (128, 128, 255), red grows where it faces left,
green where it faces up.
"""

from __future__ import annotations

import numpy as np

#: the depth's full range spans this fraction of the picture's shorter side: slopes do not depend on its size
RELIEF = 0.5
_Z = 2.0 * np.pi  # the z of the normal (controlnet-aux's ``a``); with Sobel's 8x gain, a slope of 1 tilts ~52°


def normal_map(depth: np.ndarray) -> np.ndarray:
    """The HxWx3 uint8 normal map of ``depth`` (HxW float, near = high, any scale)."""
    import cv2

    depth = depth.astype(np.float32)
    low, high = float(depth.min()), float(depth.max())
    scale = 0.0 if high - low < 1e-8 else RELIEF * min(depth.shape) / (high - low)
    relief = (depth - low) * scale
    x = cv2.Sobel(relief, cv2.CV_32F, 1, 0, ksize=3)
    y = cv2.Sobel(relief, cv2.CV_32F, 0, 1, ksize=3)
    normal = np.stack([x, y, np.full_like(x, _Z)], axis=2)
    normal /= np.sqrt(np.sum(normal**2, axis=2, keepdims=True))
    return np.clip(np.rint(normal * 127.5 + 127.5), 0, 255).astype(np.uint8)


__all__ = ["RELIEF", "normal_map"]
