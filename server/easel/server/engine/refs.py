"""Model references: what a user may name, and the short id clients see.

Accepted references (docs/models.md):

* ``easel-demo`` - the built-in demo model (any id in ``builtin_models``, which the demo package fills).
* ``org/name`` - a Hugging Face hub id (downloaded to / read from the normal HF cache).
* ``/path/to/folder`` - a local diffusers folder (has ``model_index.json``).
* ``/path/to/model.safetensors`` or ``.ckpt`` - a single-file checkpoint. Its diffusers config
  comes from ``#config=<folder or hub id>`` appended to the reference, else from a sibling folder
  ``model/`` or ``model.config/`` holding a ``model_index.json``, else diffusers infers it (which
  needs that default config in the HF cache or the network).

Relative paths are looked up in the models folders when there are any, else in the working
directory. Paths the server is started with may lie anywhere; any other path must lie inside a
models folder when there are any (``confine``).
Ids: hub ids as is; folders by their name; files by their name without the extension.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .. import builtin_models
from .. import demo as _demo  # noqa: F401  (importing it registers the built-in demo model)
from ..library.header import GGUF_SUFFIX
from ..library.layouts import sibling_config
from .types import EngineError

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", GGUF_SUFFIX)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelRef:
    """A parsed reference. ``location``: repo id, folder or file; ``config``: single-file config."""

    ref: str
    id: str
    source: str  # "hub" | "folder" | "single_file" | "builtin"
    location: str
    config: str | None = None


def parse_ref(ref: str, models_dir: str | Sequence[str] | None = None, *, confine: bool = True) -> ModelRef:
    """Turn a user's model reference into a ModelRef; EngineError(field="model") if it names nothing.
    ``confine=False``: named by whoever started the server, so it may lie outside the models folders."""
    text = (ref or "").strip()
    if not text:
        raise EngineError("empty model reference", field="model")
    if builtin_models.find(text) is not None:
        return builtin_ref(text)
    path, fragment = text, ""
    if "#" in text and _find(text, models_dir, confine) is None:
        path, fragment = text.split("#", 1)
    found = _find(path, models_dir, confine)
    if found is None:
        if fragment or not _HUB_ID.match(path) or path.lower().endswith(SINGLE_FILE_SUFFIXES):
            raise EngineError(
                f"model {text!r}: no such file or folder (looked in {_where(models_dir)}); give a diffusers "
                "folder, a .safetensors/.ckpt file or a Hugging Face id like 'org/name'", field="model")
        return ModelRef(text, path, "hub", path)
    if os.path.isdir(found):
        if fragment:
            raise EngineError(f"model {text!r}: '#config=' only applies to single-file checkpoints", field="model")
        if not os.path.isfile(os.path.join(found, "model_index.json")):
            raise EngineError(
                f"model {text!r}: folder {found} has no model_index.json, so it is not a diffusers pipeline "
                "folder; point at the folder that holds model_index.json, or at a .safetensors file", field="model")
        return ModelRef(text, os.path.basename(os.path.normpath(found)), "folder", found)
    if not found.lower().endswith(SINGLE_FILE_SUFFIXES):
        raise EngineError(
            f"model {text!r}: {os.path.basename(found)} is not a .safetensors, .ckpt or .gguf checkpoint", field="model")
    config = _parse_config(fragment, text, found, models_dir, confine) if fragment else sibling_config(found)
    stem = os.path.splitext(os.path.basename(found))[0]
    return ModelRef(text, stem, "single_file", found, config)


def builtin_ref(model_id: str) -> ModelRef:
    """The reference to a built-in model (``builtin_models``)."""
    return ModelRef(model_id, model_id, "builtin", model_id)


def _find(path: str, models_dir: str | Sequence[str] | None, confine: bool = True) -> str | None:
    """The file or folder ``path`` names. With models folders it is looked up in them first, and with
    ``confine`` it must resolve inside one of them (symlinks and ``..`` included); without, a path
    found nowhere inside is taken as given (the server's own start-up references)."""
    path = os.path.expanduser(path)
    roots = models_roots(models_dir)
    if not roots:
        return os.path.abspath(path) if os.path.exists(path) else None
    outside = None
    for root in roots:
        candidate = os.path.realpath(os.path.join(root, path))
        if not os.path.exists(candidate):
            continue
        if os.path.commonpath([root, candidate]) == root:
            return candidate
        outside = outside or candidate
    if not confine:
        return outside or (os.path.abspath(path) if os.path.exists(path) else None)
    if outside is not None:
        where = roots[0] if len(roots) == 1 else ", ".join(roots)
        raise EngineError(f"model {path!r} lies outside the models folder {where}; put it there or "
                          "start the server without --models-dir", field="model")
    return None


def models_roots(models_dir: str | os.PathLike | Sequence[str | os.PathLike] | None) -> list[str]:
    """The models folders as real paths (one folder or several)."""
    if not models_dir:
        return []
    items = [models_dir] if isinstance(models_dir, (str, os.PathLike)) else list(models_dir)
    return [os.path.realpath(os.path.expanduser(os.fspath(m))) for m in items]


def _where(models_dir: str | Sequence[str] | None) -> str:
    return ", ".join(models_roots(models_dir)) or os.getcwd()


def _parse_config(fragment: str, text: str, file: str, models_dir: str | Sequence[str] | None,
                  confine: bool = True) -> str:
    key, _, value = fragment.partition("=")
    if key.strip() != "config" or not value.strip():
        raise EngineError(
            f"model {text!r}: unknown suffix '#{fragment}'; the only one is '#config=<diffusers folder or hub id>'",
            field="model")
    value = value.strip()
    local = _find(value, models_dir, confine) or _find(os.path.join(os.path.dirname(file), value), None)
    if local is not None:
        if not os.path.isfile(os.path.join(local, "model_index.json")):
            raise EngineError(
                f"model {text!r}: config folder {local} has no model_index.json; use a diffusers folder "
                "of the same architecture (weights are not needed, only the json/txt files)", field="model")
        return local
    if _HUB_ID.match(value):
        return value
    raise EngineError(f"model {text!r}: config {value!r} is neither a folder nor a hub id", field="model")
