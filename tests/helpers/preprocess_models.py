"""Tiny random-weight "From image" models and pictures for the preprocess tests, built offline.

* ``picture(h, w)``, ``png(rgb)``, ``pixels(image)``: a test picture and its PNG round trip.
* ``save_tiny_depth_anything``, ``save_tiny_dpt``, ``save_tiny_segformer``, ``save_tiny_vitpose``: transformers
  models (``save_pretrained``) in the folder given, laid out as their hub repositories are.
* ``save_random_annotators(folder)``: controlnet-aux's line art and HED networks with random weights, saved
  as the ``.pth`` files of lllyasviel/Annotators (``folder`` is laid out like that repository).
"""

from __future__ import annotations

import io
import os

import numpy as np
import torch
from PIL import Image as PILImage

from easel.client.protocol import Image
from easel.server.preprocess.palette import ADE20K


def picture(height: int = 45, width: int = 61) -> np.ndarray:
    """Shapes with hard edges over noise: something for every kind to find."""
    rgb = np.random.default_rng(3).integers(90, 110, (height, width, 3), dtype=np.uint8)
    rgb[8:30, 10:40] = (230, 40, 40)
    rgb[20:40, 35:55] = (30, 30, 200)
    return rgb


def png(rgb: np.ndarray) -> Image:
    """``rgb`` as a PNG attachment."""
    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, "PNG")
    return Image.png(buf.getvalue())


def pixels(image: Image) -> np.ndarray:
    """The RGB pixels of a PNG attachment."""
    return np.asarray(PILImage.open(io.BytesIO(image.data)).convert("RGB"))


def save_tiny_depth_anything(folder) -> None:
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    torch.manual_seed(0)
    backbone = Dinov2Config(hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
                            image_size=28, patch_size=14, out_indices=[1, 2, 3, 4], reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, neck_hidden_sizes=[8, 8, 16, 16], fusion_hidden_size=8,
                                 head_hidden_size=8, reassemble_hidden_size=16, patch_size=14)
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    DPTImageProcessor(size={"height": 28, "width": 28}, keep_aspect_ratio=True, ensure_multiple_of=14).save_pretrained(folder)


def save_tiny_dpt(folder) -> None:
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    torch.manual_seed(0)
    config = DPTConfig(hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32, image_size=32,
                       patch_size=8, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 8, 16, 16],
                       fusion_hidden_size=8, reassemble_factors=[4, 2, 1, 0.5])
    DPTForDepthEstimation(config).save_pretrained(folder)
    DPTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)


def save_tiny_segformer(folder, num_labels: int = len(ADE20K)) -> None:
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    torch.manual_seed(0)
    config = SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                             patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2],
                             decoder_hidden_size=16, num_labels=num_labels)
    SegformerForSemanticSegmentation(config).save_pretrained(folder)
    SegformerImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)


def save_tiny_vitpose(folder) -> None:
    """A 2-layer ViTPose with COCO's 17 keypoints; its heatmaps biased up so keypoints score over the cut."""
    from transformers import VitPoseBackboneConfig, VitPoseConfig, VitPoseForPoseEstimation

    torch.manual_seed(0)
    backbone = VitPoseBackboneConfig(image_size=[32, 24], patch_size=[8, 8], hidden_size=16, num_hidden_layers=2,
                                     num_attention_heads=2, mlp_ratio=2, out_indices=[2])
    model = VitPoseForPoseEstimation(VitPoseConfig(backbone_config=backbone, num_labels=17))
    with torch.no_grad():
        model.head.conv.bias += 1.0
    model.save_pretrained(folder)
    with open(os.path.join(folder, "preprocessor_config.json"), "w", encoding="utf-8") as f:
        f.write('{"image_processor_type": "VitPoseImageProcessor", "size": {"height": 32, "width": 24}}')


def save_random_annotators(folder) -> None:
    """sk_model.pth, sk_model2.pth (line art) and ControlNetHED.pth (soft edges) of random networks."""
    from easel.server.preprocess.annotators import subpackage

    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(0)
    lineart, hed = subpackage("lineart"), subpackage("hed")
    for name in ("sk_model.pth", "sk_model2.pth"):
        torch.save(lineart.Generator(3, 1, 3).state_dict(), os.path.join(folder, name))
    torch.save(hed.ControlNetHED_Apache2().state_dict(), os.path.join(folder, "ControlNetHED.pth"))
