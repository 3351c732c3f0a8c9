"""Where models live in the folder layouts painters already have.

* A1111/Forge ``models/``: ``Stable-diffusion/``, ``Lora/`` (and ``LyCORIS/``), ``ControlNet/``, ``VAE/``.
* ComfyUI ``models/`` (also krita-ai-diffusion's): ``checkpoints/``, ``loras/``, ``controlnet/``,
  ``vae/``, ``diffusers/``.
* The folder above either (the install folder holding ``models/``): only ``models/`` is searched.
* Upscalers (ESRGAN & co., run by spandrel): A1111's ``ESRGAN/``, ``RealESRGAN/``, ``SwinIR/``, ``HAT/``,
  ``DAT/``, ``ScuNET/``, ComfyUI's ``upscale_models/``; in any layout, a flat folder's too.
* Anything else is a flat folder: every weights file in it (and in sub-folders that are not known
  to hold other things) is classified by its content.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from .header import GGUF_SUFFIX

WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", GGUF_SUFFIX)
KIND_FOLDERS = {  # lower-case folder name -> what it holds
    "stable-diffusion": "checkpoint", "checkpoints": "checkpoint", "diffusers": "checkpoint",
    "lora": "lora", "loras": "lora", "lycoris": "lora",
    "controlnet": "controlnet", "controlnets": "controlnet", "vae": "vae",
    **dict.fromkeys(("esrgan", "realesrgan", "upscale_models", "upscalers", "swinir", "hat", "dat", "scunet"), "upscaler")}
UPSCALER_FOLDERS = {name for name, kind in KIND_FOLDERS.items() if kind == "upscaler"}
# folders of other tools' files: never searched in a flat folder
OTHER_FOLDERS = {
    "embeddings", "ldsr", "clip", "clip_vision",
    "text_encoders", "unet", "diffusion_models", "hypernetworks", "style_models", "gligen", "photomaker",
    "ipadapter", "ip-adapter", "insightface", "facerestore_models", "codeformer", "gfpgan", "deepbooru", "blip",
    "karlo", "vae_approx", "sams", "ultralytics", "onnx", "configs", "animatediff_models",
    "animatediff_motion_lora", "venv", "node_modules", "__pycache__", "extensions", "custom_nodes", "outputs",
    "output", "input", "temp", "repositories", "annotators", "preprocessors"}
MAX_DEPTH = 4


@dataclass(frozen=True)
class Found:
    """A candidate: a weights file or a model folder, with the kind its place suggests."""

    path: str
    rel: str  # path relative to its kind folder (or the flat root), with "/"
    hint: str | None  # kind suggested by the folder it is in; None in a flat folder
    is_dir: bool = False


def kind_folders(roots: Sequence[str], names: Iterable[str]) -> list[str]:
    """The subfolders of each models folder (and of the models root inside it) whose lower-cased name is one
    of ``names``, in order, each once (``ipadapter/``, ``clip_vision/``, ``style_models/`` …)."""
    wanted, out = {n.lower() for n in names}, []
    for root in roots:
        for folder in dict.fromkeys((root, models_root(root)[0])):
            try:
                found = sorted(e.name for e in os.scandir(folder) if e.is_dir())
            except OSError:
                continue
            out.extend(os.path.join(folder, name) for name in found if name.lower() in wanted)
    return list(dict.fromkeys(out))


def models_root(folder: str) -> tuple[str, str]:
    """The folder to search inside ``folder`` and the layout's name (a1111, comfyui, flat)."""
    inner = os.path.join(folder, "models")
    if os.path.isdir(inner) and _kind_dirs(inner):
        folder = inner
    names = {name.lower() for name in _kind_dirs(folder)}
    if "stable-diffusion" in names:
        return folder, "a1111"
    if names & {"checkpoints", "diffusers", "loras"}:
        return folder, "comfyui"
    return folder, "flat"


def _kind_dirs(folder: str) -> list[str]:
    try:
        return [e.name for e in os.scandir(folder) if e.is_dir() and e.name.lower() in KIND_FOLDERS]
    except OSError:
        return []


def candidates(folder: str) -> Iterator[Found]:
    """Every weights file and model folder of a models folder, in a stable (sorted) order."""
    root, layout = models_root(folder)
    if layout == "flat":
        yield from _walk(root, "", None, 0)
        return
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir() and entry.name.lower() in KIND_FOLDERS:
            yield from _walk(entry.path, "", KIND_FOLDERS[entry.name.lower()], 0)
        elif entry.is_file() and entry.name.lower().endswith(WEIGHT_SUFFIXES) and not entry.name.startswith("."):
            yield Found(entry.path, entry.name, None)


def _walk(folder: str, rel: str, hint: str | None, depth: int) -> Iterator[Found]:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    names = {e.name for e in entries}
    for entry in entries:
        if entry.name.startswith("."):
            continue
        sub = f"{rel}/{entry.name}" if rel else entry.name
        if entry.is_dir():
            kind = model_folder_kind(entry.path)
            if kind is not None:
                if not _is_sibling_config(entry.name, names):
                    yield Found(entry.path, sub, hint, is_dir=True)
            elif hint is None and entry.name.lower() in UPSCALER_FOLDERS:  # a flat folder's ESRGAN/ …
                yield from _walk(entry.path, "", "upscaler", 0)
            elif depth < MAX_DEPTH and (hint is not None or entry.name.lower() not in OTHER_FOLDERS):
                yield from _walk(entry.path, sub, hint, depth + 1)
        elif entry.name.lower().endswith(WEIGHT_SUFFIXES):
            yield Found(entry.path, sub, hint)


def model_folder_kind(folder: str) -> str | None:
    """``checkpoint`` for a diffusers pipeline folder, ``controlnet``/``vae`` for a single diffusers model."""
    if os.path.isfile(os.path.join(folder, "model_index.json")):
        return "checkpoint"
    config = os.path.join(folder, "config.json")
    if os.path.isfile(config):
        try:
            with open(config, encoding="utf-8") as f:
                head = f.read(4096)
        except OSError:
            return None
        if re.search(r'"(Flux|SD3)?ControlNet(Union)?Model"', head):
            return "controlnet"
        if '"AutoencoderKL"' in head:
            return "vae"
    return None


def _is_sibling_config(name: str, siblings: set[str]) -> bool:
    """``model/`` or ``model.config/`` next to ``model.safetensors`` is that file's config, not a model."""
    stem = name[: -len(".config")] if name.endswith(".config") else name
    return any(stem + suffix in siblings for suffix in WEIGHT_SUFFIXES)


def sibling_config(file: str, kind: str = "checkpoint") -> str | None:
    """The diffusers config folder beside a single file: ``model/`` or ``model.config/`` next to
    ``model.safetensors`` when it holds a config of ``kind`` (``model_folder_kind``: a checkpoint's
    model_index.json, a ControlNet's config.json), else None."""
    base = os.path.splitext(file)[0]
    for candidate in (base, base + ".config"):
        if model_folder_kind(candidate) == kind:
            return candidate
    return None
