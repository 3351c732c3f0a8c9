"""Upscaler files (ESRGAN, Real-ESRGAN, SwinIR, HAT, DAT …) loaded with spandrel, with or without torchvision.

spandrel (the loader ComfyUI and chaiNNer use) recognises an architecture and its hyper-parameters
from a state dict's keys and shapes. Its package ``__init__`` builds ``MAIN_REGISTRY`` from every
architecture it has, and two of them (LaMa and RestoreFormer: inpainting and face restoration,
not upscalers) import torchvision, which does not import beside every torch build. Where
``import spandrel`` fails, ``registry`` imports spandrel's registry and each architecture package
alone (``imports.subpackage``), in ``MAIN_REGISTRY``'s own order (read from its source), and
leaves out those that do not import; an unrecognised file's error names them. Where spandrel
imports normally, its ``MAIN_REGISTRY`` is used as it is.
"""

from __future__ import annotations

import ast
import importlib
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from ...client.codes import ErrorCode
from .. import imports
from ..engine.types import EngineError

PACKAGE = "spandrel"
#: how to get spandrel (Easel is installed from its checkout or a wheel, not from a package index)
INSTALL = ("install spandrel: Easel's `upscalers` extra (`pip install '.[upscalers]'` in its checkout), or "
           "`pip install --no-deps spandrel einops` where torchvision cannot be installed")
#: what spandrel calls the models Easel runs before refining (FaceSR and Inpainting models are not upscalers)
PURPOSES = ("SR", "Restoration")
FIELD = "upscaler"


@dataclass
class Registry:
    """spandrel's architecture registry here, and the architectures left out of it (name -> why)."""

    archs: Any
    unsupported_error: type[Exception]
    skipped: dict[str, str] = field(default_factory=dict)


_lock = threading.Lock()
_registry: Registry | None = None


def registry() -> Registry:
    """The registry (made once); EngineError with how to install spandrel where it is missing."""
    global _registry
    with _lock:
        if _registry is None:
            _registry = _make_registry()
        return _registry


def _make_registry() -> Registry:
    try:
        spandrel = importlib.import_module(PACKAGE)
        return Registry(spandrel.MAIN_REGISTRY, spandrel.UnsupportedModelError)
    except ModuleNotFoundError as exc:
        if exc.name not in (PACKAGE, "einops"):
            return _partial_registry()
        raise _error(f"'upscaler' needs spandrel, which is not installed on this server; {INSTALL}") from None
    except Exception:  # torchvision missing, or built for another torch (RuntimeError)
        return _partial_registry()


def _partial_registry() -> Registry:
    """spandrel's architectures that import here, in ``MAIN_REGISTRY``'s order."""
    helpers = imports.subpackage(PACKAGE, "__helpers.registry")
    archs, skipped = helpers.ArchRegistry(), {}
    for module_name, class_name in main_registry_order():
        try:
            module = imports.subpackage(PACKAGE, f"architectures.{module_name}")
        except Exception as exc:  # noqa: BLE001 - whatever the architecture's own imports raise
            skipped[module_name] = f"{type(exc).__name__}: {exc}"
            continue
        archs.add(helpers.ArchSupport.from_architecture(getattr(module, class_name)()))
    return Registry(archs, helpers.UnsupportedModelError, skipped)


def main_registry_order() -> list[tuple[str, str]]:
    """(architecture package, class) as spandrel's ``MAIN_REGISTRY`` adds them: read from its source, so
    spandrel's own order (which decides detection) holds without importing every architecture."""
    root = imports.stand_in(PACKAGE).__path__[0]
    with open(os.path.join(root, "__helpers", "main_registry.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    found = []
    for node in ast.walk(tree):  # ArchSupport.from_architecture(Module.ClassArch())
        arch = node.args[0] if isinstance(node, ast.Call) and node.args and getattr(node.func, "attr", "") == \
            "from_architecture" else None
        if isinstance(arch, ast.Call) and isinstance(arch.func, ast.Attribute) and isinstance(arch.func.value, ast.Name):
            found.append((arch.lineno, arch.col_offset, arch.func.value.id, arch.func.attr))
    return [(module, cls) for _, _, module, cls in sorted(found)]


def state_dict(path: str) -> dict[str, Any]:
    """The tensors of a ``.safetensors`` or pickled (``.pth``/``.pt``/``.ckpt``) file; pickles load with
    ``weights_only`` (no code from the file runs)."""
    import torch

    if path.lower().endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    return torch.load(path, map_location="cpu", weights_only=True)


def load(path: str, name: str) -> Any:
    """spandrel's ImageModelDescriptor for the upscaler file ``path`` (``name`` in messages), in eval mode
    on the CPU; EngineError(field="upscaler") that says why a file cannot be used."""
    reg = registry()
    try:
        tensors = state_dict(path)
    except Exception as exc:  # noqa: BLE001 - damaged file, a pickle that needs code, …
        raise _error(f"upscaler {name!r} ({path}) cannot be read ({type(exc).__name__}: {str(exc)[:200]}); "
                     "copy or download it again") from None
    try:
        model = reg.archs.load(tensors)
    except reg.unsupported_error:
        left_out = ""
        if reg.skipped:
            left_out = (f"; spandrel's {' and '.join(sorted(reg.skipped))} models (inpainting and face restoration, "
                        "not upscalers) need torchvision, which does not import on this server")
        raise _error(f"upscaler {name!r} ({path}) is not a model spandrel recognises{left_out}; use an upscaler "
                     "such as ESRGAN, Real-ESRGAN, SwinIR, HAT or DAT") from None
    except Exception as exc:  # noqa: BLE001 - recognised, but its shapes do not fit the architecture
        raise _error(f"upscaler {name!r} ({path}) cannot be loaded ({type(exc).__name__}: {str(exc)[:200]})") from None
    if model.purpose not in PURPOSES:
        raise _error(f"upscaler {name!r} is a {model.architecture.name} {model.purpose} model, not an upscaler; "
                     "use an upscaler such as ESRGAN, Real-ESRGAN, SwinIR, HAT or DAT")
    return model.eval()


def _error(message: str) -> EngineError:
    return EngineError(message, field=FIELD, code=ErrorCode.MODEL_LOAD_FAILED)
