"""Depth and segmentation guides from transformers models, loaded offline and kept while in use.

Weights are looked for, in order, in each models folder as ``annotators/NAME`` (ComfyUI's folder for
them), ``preprocessors/NAME`` or ``NAME`` (a folder with ``config.json``; NAME is the hub id's last
part), then in the Hugging Face cache by hub id. Fetch them with ``easel download HUB_ID`` (or
``easel download HUB_ID --to MODELS/annotators``). One model is kept loaded at a time.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ...client.codes import ErrorCode
from ..engine.types import EngineError
from .palette import ADE20K

#: kind -> hub ids tried in order (the first one found is used)
WEIGHTS = {
    "depth": ("depth-anything/Depth-Anything-V2-Small-hf", "Intel/dpt-hybrid-midas"),
    "segmentation": ("openmmlab/upernet-convnext-small", "nvidia/segformer-b0-finetuned-ade-512-512"),
}
SUBFOLDERS = ("annotators", "preprocessors", "")
_lock = threading.Lock()
_loaded: dict[str, Any] = {}  # {"path": folder or hub id, "model": ..., "processor": ...}


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
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(hub_id, local_files_only=True)
    except Exception:  # not in the cache (LocalEntryNotFoundError and friends)
        return None
    return folder if os.path.isfile(os.path.join(folder, "config.json")) else None


def predict(kind: str, rgb: np.ndarray, roots: Sequence[str], report: Callable[[str], None]) -> np.ndarray:
    """``kind``'s guide of ``rgb`` (HxWx3 uint8) at the same size."""
    import torch

    path = locate(kind, roots)
    with _lock:  # one model at a time; transformers models are not safe to share across threads
        model, processor = _load(kind, path, report)
        report(f"running {kind}")
        from PIL import Image

        inputs = processor(images=Image.fromarray(rgb), return_tensors="pt")
        with torch.inference_mode():
            outputs = model(**inputs)
    height, width = rgb.shape[:2]
    if kind == "depth":
        return _depth_image(outputs.predicted_depth, height, width)
    labels = processor.post_process_semantic_segmentation(outputs, target_sizes=[(height, width)])[0]
    return ADE20K[labels.numpy().astype(np.int64)]


def _depth_image(depth: Any, height: int, width: int) -> np.ndarray:
    """Relative inverse depth, resized to the picture and stretched to 0..255 (near = bright)."""
    import torch

    depth = torch.nn.functional.interpolate(depth[:, None].float(), size=(height, width), mode="bicubic",
                                            align_corners=False)[0, 0].numpy()
    low, high = float(depth.min()), float(depth.max())
    gray = np.zeros_like(depth) if high - low < 1e-8 else (depth - low) / (high - low) * 255.0
    gray = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def _load(kind: str, path: str, report: Callable[[str], None]) -> tuple[Any, Any]:
    """The model and image processor at ``path`` (kept until another one is needed)."""
    if _loaded.get("path") == path:
        return _loaded["model"], _loaded["processor"]
    _loaded.clear()
    report(f"loading {os.path.basename(os.path.normpath(path))}")
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation, AutoModelForSemanticSegmentation

    auto = AutoModelForDepthEstimation if kind == "depth" else AutoModelForSemanticSegmentation
    try:
        model = auto.from_pretrained(path, local_files_only=True).eval()
        processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # a folder of another kind of model, broken or partial files
        raise EngineError(f"kind {kind!r}: the weights in {path} cannot be loaded ({type(exc).__name__}: "
                          f"{str(exc)[:200]}); fetch them again with `easel download {WEIGHTS[kind][0]}`",
                          field="kind", code=ErrorCode.PREPROCESSOR_UNAVAILABLE) from None
    if kind == "segmentation" and model.config.num_labels != len(ADE20K):
        raise EngineError(f"kind 'segmentation': {path} has {model.config.num_labels} classes, not ADE20K's "
                          f"{len(ADE20K)}; segmentation ControlNets need an ADE20K model such as "
                          f"{WEIGHTS[kind][0]}", field="kind", code=ErrorCode.PREPROCESSOR_UNAVAILABLE)
    _loaded.update(path=path, model=model, processor=processor)
    return model, processor
