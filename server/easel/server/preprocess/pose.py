"""Pose guides: ViTPose's COCO keypoints drawn as the OpenPose skeleton the SD 1.5 openpose ControlNets read.

The whole picture is one person's box (no person detector yet: one figure that fills most of the picture
works best). transformers' ViTPose image processors need torchvision or scipy, so ``estimate`` does their
work with OpenCV: the box, padded by 1.25 to the model's aspect, warped to its input size; each
keypoint at its heatmap's peak, moved a quarter cell toward the higher neighbour (SimpleBaseline's rule). COCO's 17 keypoints become OpenPose's 18 (the neck is the middle of the shoulders, when both
are seen); limbs are ellipses of OpenPose's colours at 60 %, joints full-colour dots, on black, as thick
as OpenPose draws them at 512 pixels, scaled with the picture's shorter side.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

#: COCO's 17 keypoints, in ViTPose's order
COCO = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
        "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
        "right_ankle")
#: OpenPose's 18 body points, each as the COCO point it is (None: the neck, made from the shoulders)
OPENPOSE_FROM_COCO = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
#: OpenPose's limbs (pairs of its points) in drawing order; limb i and point i have colour COLOURS[i]
LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
COLOURS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
           (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
           (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
THRESHOLD = 0.3  # keypoints scored lower are not drawn (OpenPose's own cut)
STICK = 4  # half the width of a limb and the radius of a joint, in pixels at 512 (OpenPose's)
Point = tuple[float, float] | None


def settings(folder: str) -> dict[str, Any]:
    """The model's input size and normalisation from its ``preprocessor_config.json`` (ViTPose's defaults)."""
    try:
        with open(os.path.join(folder, "preprocessor_config.json"), encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        config = {}
    size = config.get("size") or {}
    return {"size": (int(size.get("height", 256)), int(size.get("width", 192))),
            "mean": np.array(config.get("image_mean", (0.485, 0.456, 0.406)), np.float32),
            "std": np.array(config.get("image_std", (0.229, 0.224, 0.225)), np.float32)}


def estimate(model: Any, settings: dict[str, Any], rgb: np.ndarray) -> list[Point]:
    """OpenPose's 18 points of the one person filling ``rgb`` (HxWx3 uint8), by a ViTPose ``model``."""
    import cv2
    import torch

    height, width = rgb.shape[:2]
    (rows, cols), centre = settings["size"], (width / 2, height / 2)
    box_w, box_h = max(width, height * cols / rows) * 1.25, max(height, width * rows / cols) * 1.25
    warp = np.array([[(cols - 1) / box_w, 0, (cols - 1) / box_w * (box_w / 2 - centre[0])],
                     [0, (rows - 1) / box_h, (rows - 1) / box_h * (box_h / 2 - centre[1])]], np.float32)
    patch = cv2.warpAffine(rgb, warp, (cols, rows), flags=cv2.INTER_LINEAR).astype(np.float32) / 255.0
    pixels = torch.from_numpy(((patch - settings["mean"]) / settings["std"]).transpose(2, 0, 1)[None].copy())
    with torch.inference_mode():
        heatmaps = model(pixel_values=pixels).heatmaps[0].float().numpy()  # 17 x h x w
    _, map_h, map_w = heatmaps.shape
    keypoints, scores = np.zeros((len(heatmaps), 2)), np.zeros(len(heatmaps))
    for k, heat in enumerate(heatmaps):
        y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
        scores[k] = heat[y, x]
        dx = np.sign(heat[y, x + 1] - heat[y, x - 1]) * 0.25 if 0 < x < map_w - 1 else 0.0
        dy = np.sign(heat[y + 1, x] - heat[y - 1, x]) * 0.25 if 0 < y < map_h - 1 else 0.0
        keypoints[k] = ((x + dx) * box_w / (map_w - 1) + centre[0] - box_w / 2,
                        (y + dy) * box_h / (map_h - 1) + centre[1] - box_h / 2)
    return openpose_points(keypoints, scores)


def openpose_points(keypoints: np.ndarray, scores: np.ndarray, threshold: float = THRESHOLD) -> list[Point]:
    """OpenPose's 18 points (x, y in pixels, or None where unseen) from COCO's 17 (17x2) and their scores."""
    coco = [(float(x), float(y)) if s >= threshold else None for (x, y), s in zip(keypoints, scores)]
    left, right = coco[COCO.index("left_shoulder")], coco[COCO.index("right_shoulder")]
    neck = ((left[0] + right[0]) / 2, (left[1] + right[1]) / 2) if left and right else None
    return [neck if i is None else coco[i] for i in OPENPOSE_FROM_COCO]


def draw(points: list[Point], height: int, width: int) -> np.ndarray:
    """The HxWx3 uint8 skeleton of ``points`` (OpenPose's 18) on black."""
    import cv2

    canvas = np.zeros((height, width, 3), np.uint8)
    stick = max(1, round(STICK * min(height, width) / 512))
    for (a, b), colour in zip(LIMBS, COLOURS):
        if points[a] is None or points[b] is None:
            continue
        (x0, y0), (x1, y1) = points[a], points[b]
        length = math.hypot(x1 - x0, y1 - y0)
        angle = math.degrees(math.atan2(y0 - y1, x0 - x1))
        polygon = cv2.ellipse2Poly((int((x0 + x1) / 2), int((y0 + y1) / 2)), (int(length / 2), stick), int(angle),
                                   0, 360, 1)
        cv2.fillConvexPoly(canvas, polygon, [int(c * 0.6) for c in colour])
    for point, colour in zip(points, COLOURS):
        if point is not None:
            cv2.circle(canvas, (int(point[0]), int(point[1])), stick, colour, thickness=-1)
    return canvas


__all__ = ["COCO", "COLOURS", "LIMBS", "OPENPOSE_FROM_COCO", "draw", "estimate", "openpose_points", "settings"]
