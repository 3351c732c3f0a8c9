"""LoRAs: the ``.safetensors`` files of a folder, applied per job and removed again afterwards.

Ids are file paths relative to the folder (``ink.safetensors``, ``styles/ink.safetensors``); LoRAs
of the models folders (``Lora/``, ``loras/``) join them. Folders are scanned on every listing (file
headers cached), so files dropped in while the server runs appear at once; each LoRA's family comes
from its header, and a LoRA is offered only to models of its family.
``LoraLibrary.applied`` loads one or more LoRAs into a pipeline as PEFT adapters
(``load_lora_weights(adapter_name=...)`` + ``set_adapters(names, weights)``) and unloads them all
when the job ends, whatever happened, so the next job runs on the untouched model (bit-exact).
The files' tensors are cached (a few, by path, size and mtime), so re-applying a LoRA skips the disk.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

from ...client.codes import ErrorCode
from ..families import Family
from ..library.detect import fits
from ..library.scan import Entry, Library
from .types import EngineError

log = logging.getLogger(__name__)
SUFFIX = ".safetensors"
CACHED_FILES = 4  # state dicts kept in memory (a LoRA is 10-200 MB)


class LoraLibrary:
    """The LoRA files of ``folder`` and of the models folders' library, and a small cache of their tensors."""

    def __init__(self, folder: str | os.PathLike | None, library: Library | None = None):
        self.folder = os.path.abspath(os.path.expanduser(os.fspath(folder))) if folder is not None else None
        if self.folder is not None and not os.path.isdir(self.folder):
            raise EngineError(f"LoRA folder {self.folder} does not exist; create it and put .safetensors LoRAs in it",
                              field="loras")
        self._own = Library([self.folder], hint="lora") if self.folder else None
        self._library = library
        self._cache: OrderedDict[tuple[str, int, float], dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Whether there is anywhere LoRAs can come from."""
        return self._own is not None or self._library is not None

    def rescan(self) -> None:
        """Rescan the LoRA folder now (listings within the library's interval reuse this scan)."""
        if self._own is not None:
            self._own.scan()

    def entries(self) -> dict[str, Entry]:
        """LoRA id -> library entry: the LoRA folder's, then the models folders' (rescanned unless just done)."""
        found: dict[str, Entry] = {}
        for source in (self._own, self._library):
            for entry in source.entries("lora") if source is not None else []:
                if entry.path.lower().endswith(SUFFIX):
                    name, n = entry.id, 2
                    while name in found:
                        name, n = f"{entry.id}-{n}", n + 1
                    found[name] = entry
        return found

    def names(self) -> list[str]:
        """Ids of the usable LoRAs (relative paths with ``/``), sorted."""
        return sorted(name for name, entry in self.entries().items() if entry.problem is None)

    def fitting(self, context: int | None, family: Family | None, entries: dict[str, Entry] | None = None) -> list[str]:
        """Ids of the usable LoRAs that fit a model of this cross-attention width and family."""
        return sorted(name for name, e in (entries if entries is not None else self.entries()).items()
                      if e.problem is None and fits(e.desc, context, family))

    def path(self, name: str) -> str:
        """The file of LoRA ``name``; EngineError (field "loras") unless it is one of ``names()``."""
        return self._entry(name).path

    def _entry(self, name: str) -> Entry:
        entries = self.entries()
        entry = entries.get(name)
        if entry is None:
            available = self.names()
            where = "" if self.enabled else " (the server was started without --loras-dir or --models-dir)"
            offer = f"; available: {', '.join(available)}" if available else ""
            raise EngineError(f"unknown LoRA {name!r}{where}{offer}", field="loras", code=ErrorCode.UNKNOWN_LORA)
        if entry.problem is not None:
            raise EngineError(f"LoRA {name!r} ({entry.path}) cannot be used: {entry.problem}", field="loras",
                              code=ErrorCode.LORA_FAILED)
        return entry

    def check_fits(self, name: str, model_id: str, context: int | None, family: Family | None) -> None:
        """EngineError (field loras) naming both when LoRA ``name`` was made for another model family."""
        entry = self._entry(name)
        if not fits(entry.desc, context, family):
            made = entry.desc.family.label if entry.desc.family else "another family"
            width = f", cross-attention {entry.desc.context}" if entry.desc.context else ""
            mine = Family(family).label if family else "unknown"
            raise EngineError(f"LoRA {name!r} is for {made}{width}; model {model_id!r} is {mine}"
                              f"{f' ({context})' if context else ''}: pick a LoRA of the model's family",
                              field="loras", code=ErrorCode.LORA_FAILED)

    def tensors(self, name: str) -> dict[str, Any]:
        """The file's tensors (cached); a new dict each time, since loading may pop keys from it."""
        from safetensors.torch import load_file

        path = self.path(name)
        stat = os.stat(path)
        key = (path, stat.st_size, stat.st_mtime)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return dict(cached)
        try:
            tensors = load_file(path)
        except Exception as exc:
            raise EngineError(f"LoRA {name!r} cannot be read: {type(exc).__name__}: {exc}", field="loras",
                              code=ErrorCode.LORA_FAILED) from None
        with self._lock:
            self._cache[key] = tensors
            while len(self._cache) > CACHED_FILES:
                self._cache.popitem(last=False)
        return dict(tensors)

    @contextlib.contextmanager
    def applied(self, pipe: Any, loras: Sequence[tuple[str, float]], model_id: str) -> Iterator[None]:
        """Within the block, ``pipe`` (and every pipeline sharing its modules) runs with ``loras``."""
        if not loras:
            yield
            return
        names = [f"easel{i}" for i in range(len(loras))]
        try:
            for adapter, (name, _) in zip(names, loras):
                self._load(pipe, adapter, name, model_id)
            pipe.set_adapters(names, [float(w) for _, w in loras])
            yield
        finally:
            with _quiet_loras():
                pipe.unload_lora_weights()

    def _load(self, pipe: Any, adapter: str, name: str, model_id: str) -> None:
        tensors = self.tensors(name)
        try:
            with _quiet_loras():
                pipe.load_lora_weights(tensors, adapter_name=adapter)
        except (ValueError, RuntimeError, KeyError, TypeError) as exc:
            detail = " ".join(line.strip() for line in str(exc).splitlines()[:2])[:300]
            raise EngineError(f"LoRA {name!r} does not fit model {model_id!r} ({type(exc).__name__}: {detail}); "
                              "use a LoRA made for this model's family", field="loras", code=ErrorCode.LORA_FAILED) from None
        if not any(adapter in found for found in pipe.get_list_adapters().values()):
            raise EngineError(f"LoRA {name!r} changed nothing in model {model_id!r}: none of its weights name a layer "
                              "of this model; use a LoRA made for this model's family", field="loras",
                              code=ErrorCode.LORA_FAILED)


@contextlib.contextmanager
def _quiet_loras() -> Iterator[None]:
    """diffusers warns for every model part a LoRA has no weights for, and PEFT for every extra adapter:
    normal here; a LoRA that fits nothing is caught afterwards, and load errors are re-raised shorter."""
    loggers = [logging.getLogger(f"diffusers.loaders.{name}") for name in ("lora_base", "peft")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(peft_config|was active which is now deleted).*",
                                    category=UserWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
