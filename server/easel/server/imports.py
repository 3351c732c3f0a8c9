"""Subpackages of optional libraries whose package ``__init__`` cannot be imported here.

controlnet-aux and spandrel import every module they have from their ``__init__``, and a few of
those need torchvision, which does not import beside every torch build (the CPU torch Easel's
dev/CI pins: ``operator torchvision::nms does not exist``). Easel uses only parts that do not need
it: ``subpackage`` imports those under an empty stand-in for the package, without running its ``__init__``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types


def subpackage(package: str, name: str) -> types.ModuleType:
    """``package.name``; where ``package``'s ``__init__`` cannot be imported, the subpackage alone, under
    an empty stand-in for the package (kept in ``sys.modules``, so later imports find the same one)."""
    try:
        return importlib.import_module(f"{package}.{name}")
    except Exception:  # ImportError, or the RuntimeError of a torchvision built for another torch
        stand_in(package)
        return importlib.import_module(f"{package}.{name}")


def stand_in(package: str) -> types.ModuleType:
    """The module ``package`` in ``sys.modules``: the imported one, or an empty stand-in that only knows
    where its files are (ModuleNotFoundError when the package is not installed)."""
    module = sys.modules.get(package)
    if module is not None:
        return module
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"No module named {package!r}", name=package)
    module = types.ModuleType(package)
    module.__path__ = list(spec.submodule_search_locations)
    module.__spec__ = spec
    module.__file__ = spec.origin
    sys.modules[package] = module
    return module
