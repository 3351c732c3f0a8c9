"""The diffusers configs Easel ships for the single-file architectures it recognises (no weights).

``configs/<name>.json`` holds one architecture's pipeline: ``model_index``, the ``unet``, ``vae``,
``scheduler`` and text-encoder configs and the tokenizer settings, as in the reference repositories
named in each file's ``_note`` (``controlnet-*.json``: one ControlNet's config, ``CONTROL_CONFIGS``). The
CLIP tokenizer's vocabulary is derived from ``clip_merges.txt.gz`` (CLIP's BPE merges, MIT licence, see
configs/NOTICE). ``config_folder(name)`` writes a normal diffusers config folder (json + tokenizer text)
once per process, which diffusers' single-file loaders read with no hub access.
"""

from __future__ import annotations

import atexit
import gzip
import json
import os
import shutil
import tempfile
import threading
from importlib import resources
from typing import Any

from ..families import Family

# architecture name -> (family, native size in px)
CONFIGS: dict[str, tuple[Family, int]] = {
    "sd1": (Family.SD1, 512), "sd1-inpaint": (Family.SD1, 512), "sd2": (Family.SD2, 512), "sd2-v": (Family.SD2, 768),
    "sd2-inpaint": (Family.SD2, 512), "sdxl": (Family.SDXL, 1024), "sdxl-inpaint": (Family.SDXL, 1024),
    "sdxl-refiner": (Family.SDXL_REFINER, 1024)}
# ControlNet architecture name -> the family it steers (its folder: ``controlnet/config.json``)
CONTROL_CONFIGS: dict[str, Family] = {"controlnet-sd1": Family.SD1, "controlnet-sdxl": Family.SDXL,
                                      "controlnet-union-sdxl": Family.SDXL}
_TOKENIZER_PARTS = ("tokenizer", "tokenizer_2")
_COMPONENT_FILES = {"unet": "config.json", "vae": "config.json", "text_encoder": "config.json",
                    "text_encoder_2": "config.json", "scheduler": "scheduler_config.json", "controlnet": "config.json"}
_lock = threading.Lock()
_root: str | None = None


def spec(name: str) -> dict[str, Any]:
    """The shipped spec of architecture ``name`` (KeyError for an unknown name)."""
    if name not in CONFIGS and name not in CONTROL_CONFIGS:
        raise KeyError(f"no shipped config {name!r}; known: {', '.join([*CONFIGS, *CONTROL_CONFIGS])}")
    text = resources.files(__package__).joinpath("configs", name + ".json").read_text(encoding="utf-8")
    return json.loads(text)


def clip_vocab() -> tuple[dict[str, int], str]:
    """CLIP's vocab.json mapping and merges.txt text, derived from the shipped BPE merges."""
    raw = resources.files(__package__).joinpath("configs", "clip_merges.txt.gz").read_bytes()
    merges_text = gzip.decompress(raw).decode("utf-8")
    merges = [line for line in merges_text.splitlines()[1:] if line]
    chars = byte_chars()
    tokens = chars + [c + "</w>" for c in chars] + [m.replace(" ", "") for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges_text


def byte_chars() -> list[str]:
    """CLIP's byte-to-unicode table in its own order: printable bytes first, then the remapped rest."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = [chr(b) for b in printable]
    extra = 0
    for b in range(256):
        if b not in printable:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def config_folder(name: str) -> str:
    """A diffusers config folder for architecture ``name`` (written on first use, removed at exit)."""
    global _root
    with _lock:
        if _root is None:
            _root = tempfile.mkdtemp(prefix="easel-configs-")
            atexit.register(shutil.rmtree, _root, True)
        folder = os.path.join(_root, name)
        if not os.path.isdir(folder):  # write_folder puts a complete folder in place at once
            write_folder(spec(name), folder)
        return folder


def control_folder(name: str) -> str:
    """The folder whose config.json is the shipped ControlNet config ``name`` (``CONTROL_CONFIGS``)."""
    return os.path.join(config_folder(name), "controlnet")


def write_folder(data: dict[str, Any], folder: str) -> str:
    """Write a spec as a diffusers folder: model_index.json, <part>/config.json, tokenizer files."""
    tmp = folder + ".part"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    vocab: tuple[dict[str, int], str] | None = None
    for part, content in data.items():
        if part.startswith("_"):
            continue
        if part == "model_index":
            _write_json(os.path.join(tmp, "model_index.json"), content)
        elif part in _TOKENIZER_PARTS:
            vocab = vocab or clip_vocab()
            os.makedirs(os.path.join(tmp, part))
            _write_json(os.path.join(tmp, part, "tokenizer_config.json"), content)
            _write_json(os.path.join(tmp, part, "vocab.json"), vocab[0])
            with open(os.path.join(tmp, part, "merges.txt"), "w", encoding="utf-8") as f:
                f.write(vocab[1])
        else:
            os.makedirs(os.path.join(tmp, part))
            _write_json(os.path.join(tmp, part, _COMPONENT_FILES[part]), content)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def _write_json(path: str, content: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(content, f, ensure_ascii=False)
