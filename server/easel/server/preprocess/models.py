"""Depth, normal, segmentation and pose guides from transformers models, loaded offline and kept while in use.

Weights are looked for, in order, in each models folder as ``annotators/NAME`` (ComfyUI's folder for
them), ``preprocessors/NAME`` or ``NAME`` (a folder with ``config.json``; NAME is the hub id's last
part), then in the Hugging Face cache by hub id. Fetch them with ``easel download HUB_ID`` (or
``easel download HUB_ID --to MODELS/annotators``). One model is kept loaded at a time (``holding``,
shared with the controlnet-aux annotators). Normal maps come from the depth model (``normals``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from ...client.codes import ErrorCode
from ..engine.types import EngineError
from . import pose
from .normals import normal_map
from .palette import ADE20K

#: kind -> hub ids tried in order (the first one found is used)
WEIGHTS = {
    "depth": ("depth-anything/Depth-Anything-V2-Small-hf", "Intel/dpt-hybrid-midas"),
    "segmentation": ("openmmlab/upernet-convnext-small", "nvidia/segformer-b0-finetuned-ade-512-512"),
    "pose": ("usyd-community/vitpose-base-simple",),
}
WEIGHTS["normal"] = WEIGHTS["depth"]  # a normal map is the depth map's slopes: the same model, kept loaded for both
SUBFOLDERS = ("annotators", "preprocessors", "")
_lock = threading.Lock()
_loaded: dict[str, Any] = {}  # {"key": what is loaded (a folder), "value": the loaded model(s)}


def locate(kind: str, roots: Sequence[str]) -> str:
    """The folder holding ``kind``'s weights; EngineError(field="kind") saying how to get them."""
    for hub_id in WEIGHTS[kind]:
        name = hub_id.rsplit("/", 1)[-1]
        for root in roots:
            for sub in SUBFOLDERS:
                folder = os.path.join(root, sub, name)
                if os.path.isfile(os.path.join(folder, "config.json")):
                    return folder
    for hub_id in WEIGHTS[kind]:
        cached = _cached(hub_id)
        if cached is not None:
            return cached
    first = WEIGHTS[kind][0]
    where = f"models folders ({', '.join(roots)}) as annotators/NAME, nor in " if roots else ""
    raise EngineError(
        f"kind {kind!r} is not available on this server: its weights are neither in the {where}the Hugging Face "
        f"cache (looked for {' or '.join(WEIGHTS[kind])}); fetch them once with `easel download {first}` and ask again",
        field="kind", code=ErrorCode.PREPROCESSOR_UNAVAILABLE)


def _cached(hub_id: str) -> str | None:
    from ..hf_cache import cached_snapshot

    folder = cached_snapshot(hub_id)
    return folder if folder is not None and os.path.isfile(os.path.join(folder, "config.json")) else None


@contextmanager
def holding(key: str, name: str, load: Callable[[], Any], report: Callable[[str], None]) -> Iterator[Any]:
    """The model(s) ``load()`` makes for ``key`` (kept until another key is asked for; ``name`` in the
    "loading" report), used under the one lock.

    One model at a time: they are big, and torch models are not safe to share across threads."""
    with _lock:
        if _loaded.get("key") != key:
            _loaded.clear()
            report(f"loading {name}")
            _loaded.update(key=key, value=load())
        yield _loaded["value"]


def predict(kind: str, rgb: np.ndarray, roots: Sequence[str], report: Callable[[str], None]) -> np.ndarray:
    """``kind``'s guide of ``rgb`` (HxWx3 uint8) at the same size."""
    import torch
    from PIL import Image

    path = locate(kind, roots)
    height, width = rgb.shape[:2]
    name = os.path.basename(os.path.normpath(path))
    with holding(path, name, lambda: _load(kind, path), report) as (model, processor):
        report(f"running {kind}")
        if kind == "pose":
            points = pose.estimate(model, processor, rgb)
        else:
            inputs = processor(images=Image.fromarray(rgb), return_tensors="pt")
            with torch.inference_mode():
                outputs = model(**inputs)
    if kind == "pose":
        return pose.draw(points, height, width)
    if kind == "depth":
        return _gray(_depth(outputs.predicted_depth, height, width))
    if kind == "normal":
        return normal_map(_depth(outputs.predicted_depth, height, width))
    labels = processor.post_process_semantic_segmentation(outputs, target_sizes=[(height, width)])[0]
    return ADE20K[labels.numpy().astype(np.int64)]


def _depth(depth: Any, height: int, width: int) -> np.ndarray:
    """The model's relative inverse depth (near = high), float32 resized to the picture."""
    import torch

    return torch.nn.functional.interpolate(depth[:, None].float(), size=(height, width), mode="bicubic",
                                           align_corners=False)[0, 0].numpy()


def _gray(depth: np.ndarray) -> np.ndarray:
    """Depth stretched to 0..255 (near = bright), in all three channels."""
    low, high = float(depth.min()), float(depth.max())
    gray = np.zeros_like(depth) if high - low < 1e-8 else (depth - low) / (high - low) * 255.0
    gray = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def _load(kind: str, path: str) -> tuple[Any, Any]:
    """The model and image processor of ``kind`` at ``path``; EngineError with the fix when they do not load."""
    import transformers

    auto = {"depth": "AutoModelForDepthEstimation", "normal": "AutoModelForDepthEstimation",
            "segmentation": "AutoModelForSemanticSegmentation", "pose": "VitPoseForPoseEstimation"}[kind]
    try:
        model = getattr(transformers, auto).from_pretrained(path, local_files_only=True).eval()
        if kind == "pose":  # transformers' ViTPose processors need torchvision or scipy: pose.py does their work
            processor = pose.settings(path)
        else:
            processor = transformers.AutoImageProcessor.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # a folder of another kind of model, broken or partial files
        raise EngineError(f"kind {kind!r}: the weights in {path} cannot be loaded ({type(exc).__name__}: "
                          f"{str(exc)[:200]}); fetch them again with `easel download {WEIGHTS[kind][0]}`",
                          field="kind", code=ErrorCode.PREPROCESSOR_UNAVAILABLE) from None
    if kind == "segmentation" and model.config.num_labels != len(ADE20K):
        raise EngineError(f"kind 'segmentation': {path} has {model.config.num_labels} classes, not ADE20K's "
                          f"{len(ADE20K)}; segmentation ControlNets need an ADE20K model such as "
                          f"{WEIGHTS[kind][0]}", field="kind", code=ErrorCode.PREPROCESSOR_UNAVAILABLE)
    if kind == "pose" and model.config.num_labels != len(pose.COCO):
        raise EngineError(f"kind 'pose': {path} finds {model.config.num_labels} keypoints, not COCO's {len(pose.COCO)}; "
                          f"use a COCO ViTPose model such as {WEIGHTS[kind][0]}", field="kind",
                          code=ErrorCode.PREPROCESSOR_UNAVAILABLE)
    return model, processor
