"""The subject of a picture for the ``background`` selection mode, found by a rembg background-removal model.

The model is the server setting ``background_model`` (``--background-model``): a rembg model name
(``isnet-general-use``, ``u2net``, ``birefnet-general`` …: rembg keeps its file in its models folder, ``~/.u2net``
or ``U2NET_HOME`` where one is set, and downloads it on first use while online), or an ``.onnx`` file, run by the
session of the rembg model whose name its file name is, else by rembg's custom-model session ``u2net_custom``.

rembg's package ``__init__`` imports its alpha-matting toolbox (pymatting with numba, scipy, scikit-image),
which Easel does not use; where that fails, its session modules are imported alone under stand-ins
(``imports.stand_in``): they need only onnxruntime, pooch, numpy and Pillow.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import sys
import threading
from functools import cache
from typing import Any

import numpy as np
from PIL import Image as PILImage

from ..client.codes import ErrorCode
from . import imports
from .engine.types import EngineError
from .imaging.modes import subject_levels
from .settings import ServeSettings

DEFAULT_MODEL: str = ServeSettings.background_model  #: the setting's default (rembg's general DIS model)
SETTING = "--background-model"
FIELD = "inpaint_mode"
#: the session a model file whose name is no rembg model's runs with (320² input, ImageNet normalisation)
CUSTOM = "u2net_custom"
#: how to get rembg (Easel is installed from its checkout or a wheel, not from a package index)
INSTALL = ("install rembg and onnxruntime: Easel's `background` extra (`pip install '.[background]'` in its "
           "checkout), or `pip install --no-deps rembg pooch onnxruntime flatbuffers` where rembg's other "
           "requirements cannot be installed")

_lock = threading.Lock()
_sessions: dict[str, Any] = {}


def subject_matte(rgba: np.ndarray, setting: str = DEFAULT_MODEL) -> np.ndarray:
    """The subject of ``rgba`` (HxWx4 uint8) as an HxW uint8 matte (255 = subject), levelled by
    ``modes.subject_levels``; EngineError naming ``--background-model`` where the model cannot run."""
    session = _session(setting)
    picture = PILImage.fromarray(np.ascontiguousarray(rgba[..., :3]), "RGB")
    found = [np.asarray(m.convert("L").resize(picture.size)) for m in session.predict(picture)]
    return subject_levels(np.max(found, axis=0))


def _session(setting: str) -> Any:
    with _lock:
        if setting not in _sessions:
            _sessions[setting] = _new_session(setting)
        return _sessions[setting]


def _new_session(setting: str) -> Any:
    import onnxruntime
    import torch

    classes = session_classes()
    path = os.path.expanduser(setting)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the server's --threads
    kwargs: dict[str, str] = {}
    if os.path.isfile(path):
        stem = os.path.splitext(os.path.basename(path))[0]
        base = classes.get(stem) if not stem.endswith("_custom") else None
        cls, name = _from_file(base or classes[CUSTOM], path), stem if base else CUSTOM
        what, kwargs = f"background model file {path!r}", {"model_path": path}
    elif setting in classes:
        cls, name, what = classes[setting], setting, f"background model {setting!r}"
        _check_present(cls, setting)
    else:
        named = ", ".join(n for n in classes if not n.endswith("_custom"))
        raise EngineError(f"{SETTING} {setting!r} is neither a file nor a rembg model; name an .onnx file or one "
                          f"of {named}", field=FIELD, code=ErrorCode.MODEL_LOAD_FAILED)
    try:
        return cls(name, options, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a failed download or a file onnxruntime cannot read
        raise EngineError(f"{what} ({SETTING}) could not be loaded: {type(exc).__name__}: {exc}; "
                          f"{_where(cls, name)}", field=FIELD, code=ErrorCode.MODEL_LOAD_FAILED) from None


def _check_present(cls: Any, name: str) -> None:
    """Offline (``HF_HUB_OFFLINE``), a named model's file must be here already: rembg would download it."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE and cls.resolve_existing(f"{name}.onnx") is None:
        raise EngineError(f"background model {name!r} ({SETTING}) is not on this computer and HF_HUB_OFFLINE is "
                          f"set, so it is not downloaded; {_where(cls, name)}", field=FIELD,
                          code=ErrorCode.MODEL_LOAD_FAILED)


def _where(cls: Any, name: str) -> str:
    if name == CUSTOM:
        return f"set {SETTING} to a readable rembg .onnx model, or to a rembg model name"
    return (f"rembg downloads it on first use while online into {cls.model_dir()} (or put {name}.onnx there), "
            f"or set {SETTING} to an .onnx file")


def _from_file(cls: Any, path: str) -> Any:
    """``cls`` (a rembg session class) running the model file at ``path`` instead of its download."""

    class FileSession(cls):
        @classmethod
        def download_models(cls, *args: Any, **kwargs: Any) -> str:
            return path

    return FileSession


@cache
def session_classes() -> dict[str, Any]:
    """rembg's local model sessions here, by model name (those whose imports fail here are left out)."""
    base = _module("base").BaseSession
    package = sys.modules["rembg.sessions"]
    found: dict[str, Any] = {}
    pending = [info.name for info in pkgutil.iter_modules(package.__path__)]
    while pending:  # again while some import: a session may import another from the package (birefnet's)
        failed = []
        for name in pending:
            try:
                module = _module(name)
            except Exception:  # noqa: BLE001 - a session needing what is not installed (sam: scipy)
                failed.append(name)
                continue
            for value in vars(module).values():
                if (isinstance(value, type) and issubclass(value, base) and value is not base
                        and value.__module__ == module.__name__):
                    if not hasattr(package, value.__name__):  # as the package's own __init__ exports them
                        setattr(package, value.__name__, value)
                    if value.name() and value.is_local() and not value.requires_credentials():
                        found[value.name()] = value
        if len(failed) == len(pending):
            break
        pending = failed
    return found


def _module(name: str) -> Any:
    """``rembg.sessions.NAME``, under stand-ins for rembg and its sessions package where their ``__init__``
    fails (the alpha-matting toolbox missing, or a session's own imports)."""
    missing = [p for p in ("rembg", "onnxruntime", "pooch") if importlib.util.find_spec(p) is None]
    if missing:  # (rembg exits the process where onnxruntime is missing)
        raise EngineError(f"the background mode needs rembg and onnxruntime ({' and '.join(missing)} not installed "
                          f"on this server); {INSTALL}", field=FIELD, code=ErrorCode.MODEL_LOAD_FAILED)
    try:
        return importlib.import_module(f"rembg.sessions.{name}")
    except ImportError:
        imports.stand_in("rembg")
        imports.stand_in("rembg.sessions")
        return importlib.import_module(f"rembg.sessions.{name}")
