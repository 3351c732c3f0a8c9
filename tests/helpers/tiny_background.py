"""A tiny background-removal model for rembg, built with onnx's helper API, and a picture with a subject for it.

rembg's custom-model session (``u2net_custom``) feeds a model its picture as 1x3x320x320 floats (scaled by the
picture's maximum, ImageNet-normalised) and reads the first channel of its first output (1x1x320x320) as the
subject, min-max normalised. This model's subject is what is redder than it is blue: a 1x1 convolution (red minus
blue, times ``GAIN``) through a sigmoid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw

SIDE = 320  #: u2net_custom's input side
GAIN = 4.0
SUBJECT = (200, 30, 30)  #: the red of ``subject_picture``'s disc
BACKDROP = (40, 120, 200)  #: the blue around it


def build_redness_model(path: Path) -> Path:
    """An ONNX file (opset 17) whose 1x1x320x320 output is sigmoid(GAIN * (red - blue)) of its 1x3x320x320 input."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.array([GAIN, 0.0, -GAIN], np.float32).reshape(1, 3, 1, 1)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "weight"], ["redness"]),
         helper.make_node("Sigmoid", ["redness"], ["subject"])],
        "redness",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, SIDE, SIDE])],
        [helper.make_tensor_value_info("subject", TensorProto.FLOAT, [1, 1, SIDE, SIDE])],
        [numpy_helper.from_array(weight, "weight")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def subject_picture(size: int = 64, disc: tuple[int, int, int, int] = (18, 16, 46, 44)) -> np.ndarray:
    """A red disc (the subject, bounding box ``disc``) on a blue backdrop, HxWx4 uint8, opaque."""
    picture = PILImage.new("RGBA", (size, size), (*BACKDROP, 255))
    ImageDraw.Draw(picture).ellipse(disc, fill=(*SUBJECT, 255))
    return np.array(picture)


def disc_core(size: int = 64, disc: tuple[int, int, int, int] = (18, 16, 46, 44), inset: int = 4) -> np.ndarray:
    """HxW bool: the inside of ``subject_picture``'s disc, ``inset`` px in from its edge."""
    x0, y0, x1, y1 = disc
    core = PILImage.new("L", (size, size), 0)
    ImageDraw.Draw(core).ellipse((x0 + inset, y0 + inset, x1 - inset, y1 - inset), fill=255)
    return np.array(core) > 0
