"""The models an engine serves: those named at start-up, then the models folders' (rescanned on demand).

Ids: named models as in refs.py (duplicates get ``-2``, ``-3``); library models by their path inside
their kind folder (``sdxl/juggernaut``). The first named model is the default; with none named, the
first usable library model, else the built-in fallback (``builtin_models.fallback``: the demo model).
Library entries that cannot be used are listed with their ``problem``; picking one raises an
EngineError that names it and says why.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Sequence

from ...client.codes import ErrorCode
from .. import builtin_models
from ..families import Family
from ..library.detect import Description
from ..library.scan import Entry, Library, base_folders, base_for
from ..traits import Traits, detect, folder_configs, guess, read_json, variant_of
from .loading import check_supported
from .refs import ModelRef, builtin_ref, parse_ref
from .types import EngineError, ModelInfo

log = logging.getLogger(__name__)
LIBRARY_KINDS = ("checkpoint", "unknown")  # what the model list shows of the library


class Catalog:
    """Model ids -> references and infos; thread-safe."""

    def __init__(self, models: Sequence[str | os.PathLike], models_dir: str | Sequence[str] | None,
                 library: Library | None):
        self._library = library
        self._refs: dict[str, ModelRef] = {}
        self._aliases: dict[str, str] = {}
        self._traits: dict[str, Traits] = {}
        self._loaded: set[str] = set()
        self._lib: dict[str, tuple[Entry, ModelRef | None]] = {}
        self._lib_aliases: dict[str, str] = {}
        self._lock = threading.RLock()
        for item in models:
            text = os.fspath(item)
            ref = parse_ref(text, models_dir, confine=False)  # named at start-up
            if ref.source == "single_file" and ref.config is None and library is not None:
                ref = _library_base(ref, library)
            model_id, n = ref.id, 2
            while model_id in self._refs:
                model_id, n = f"{ref.id}-{n}", n + 1
            if model_id != ref.id:
                log.warning("two served models are both called %r; the one from %s is %r", ref.id, text, model_id)
                ref = dataclasses.replace(ref, id=model_id)
            self._refs[model_id] = ref
            for alias in (text, ref.location, os.path.basename(ref.location)):
                self._aliases.setdefault(alias, model_id)
            self._traits[model_id] = initial_traits(ref)
        fallback = builtin_models.fallback() if not self._refs else None
        self._fallback = [fallback.id] if fallback is not None else []
        if not self._refs and library is None:
            example = f" (for example {fallback.id!r})" if fallback is not None else ""
            raise EngineError(f"no model to serve; name at least one{example} or give a models folder",
                              field="model")
        self.refresh()

    # ------------------------------------------------------------------ listing

    def refresh(self, fresh: bool = True) -> None:
        """Rescan the library (throttled by the library) and rebuild its ids."""
        if self._library is None:
            return
        named = {os.path.realpath(r.location) for r in self._refs.values() if r.source in ("folder", "single_file")}
        entries = [e for e in self._library.entries(fresh=fresh)
                   if e.kind in LIBRARY_KINDS and os.path.realpath(e.path) not in named]
        with self._lock:
            old = self._lib
            self._lib, self._lib_aliases = {}, {}
            for entry in entries:
                model_id, n = entry.id, 2
                while model_id in self._refs or model_id in self._lib or builtin_models.find(model_id) is not None:
                    model_id, n = f"{entry.id}-{n}", n + 1
                kept = old.get(model_id)
                if kept is not None and kept[0].path == entry.path and kept[0].desc == entry.desc:
                    self._lib[model_id] = kept
                else:
                    self._lib[model_id] = (entry, _entry_ref(entry, model_id))
                    if model_id not in self._loaded:
                        self._traits.pop(model_id, None)
                for alias in (entry.path, os.path.basename(entry.path), entry.id):
                    self._lib_aliases.setdefault(alias, model_id)

    def ids(self) -> list[str]:
        """Served ids, default first."""
        with self._lock:
            usable = [i for i, (e, ref) in self._lib.items() if ref is not None]
            broken = [i for i, (e, ref) in self._lib.items() if ref is None]
            fallback = self._fallback if not usable else []
            return [*self._refs, *usable, *fallback, *broken]

    def infos(self) -> list[ModelInfo]:
        self.refresh()
        return [self.info(i) for i in self.ids()]

    def info(self, model_id: str) -> ModelInfo:
        with self._lock:
            lib = self._lib.get(model_id)
            traits = self.traits(model_id)
            if lib is not None:
                entry, ref = lib
                source = "folder" if entry.folder else "single_file"
                return _info(model_id, traits, source, model_id in self._loaded, entry.name, entry.problem)
            ref = self._refs.get(model_id) or builtin_ref(model_id)
            return _info(model_id, traits, ref.source, model_id in self._loaded)

    def traits(self, model_id: str) -> Traits:
        with self._lock:
            if model_id not in self._traits:
                lib = self._lib.get(model_id)
                if lib is not None:
                    self._traits[model_id] = entry_traits(lib[0])
                else:
                    self._traits[model_id] = initial_traits(self._refs.get(model_id) or builtin_ref(model_id))
            return self._traits[model_id]

    def set_loaded(self, model_id: str, traits: Traits | None) -> None:
        """Record a load (with the traits found) or an unload (``traits=None``)."""
        with self._lock:
            if traits is None:
                self._loaded.discard(model_id)
            else:
                self._loaded.add(model_id)
                self._traits[model_id] = traits

    # ------------------------------------------------------------------ resolving

    def resolve(self, name: str | None) -> str:
        """The id ``name`` means (an id, the start-up reference, a file name or path); None = default."""
        for attempt in range(2):
            with self._lock:
                if name is None or name == "":
                    return self.ids()[0]
                ids = self.ids()
                for table in (self._refs, self._lib):
                    if name in table:
                        return name
                if name in self._aliases:
                    return self._aliases[name]
                if name in self._lib_aliases:
                    return self._lib_aliases[name]
                if name in self._fallback and name in ids:
                    return name
            if attempt == 0 and self._library is not None:  # a file added since the last listing
                self._library.scan()
                self.refresh(fresh=False)
        raise EngineError(f"unknown model {name!r}; this server serves: {', '.join(self.ids())}. Pick one of those, "
                          "or restart the server with that model added to its model list", field="model",
                          code=ErrorCode.UNKNOWN_MODEL)

    def ref(self, model_id: str) -> ModelRef:
        """The reference to load; EngineError naming the entry when it cannot be used."""
        with self._lock:
            if model_id in self._refs:
                return self._refs[model_id]
            lib = self._lib.get(model_id)
        if lib is None:
            return builtin_ref(model_id)
        entry, ref = lib
        if ref is None:
            raise EngineError(f"model {model_id!r} ({entry.path}) cannot be used: {entry.problem}", field="model",
                              code=ErrorCode.MODEL_LOAD_FAILED)
        return ref

    def entry(self, model_id: str) -> Entry | None:
        with self._lock:
            lib = self._lib.get(model_id)
            return lib[0] if lib else None


def _entry_ref(entry: Entry, model_id: str) -> ModelRef | None:
    if entry.problem or entry.kind != "checkpoint":
        return None
    return ModelRef(entry.path, model_id, "folder" if entry.folder else "single_file", entry.path, entry.config)


def _info(model_id: str, traits: Traits, source: str, loaded: bool, name: str = "",
          problem: str | None = None) -> ModelInfo:
    return ModelInfo(id=model_id, family=traits.family, native=traits.native, default_steps=traits.default_steps,
                     default_guidance=traits.default_guidance, source=source, loaded=loaded,
                     few_step=traits.few_step, name=name or model_id, problem=problem,
                     inpaint=traits.inpaint_unet, features=traits.family.features)


def entry_traits(entry: Entry) -> Traits:
    """Traits of a library entry before loading: its configs when it has them, else its header."""
    config = entry.path if entry.folder else entry.config
    if config is not None and os.path.isfile(os.path.join(config, "model_index.json")):
        return detect(entry.id, *folder_configs(config))
    return desc_traits(entry.desc, entry.id)


def desc_traits(desc: Description, name: str) -> Traits:
    """Traits from a file's header: a UNet checkpoint's family (SD 1.x where it is none Easel serves)."""
    family = desc.family if desc.family is not None and desc.family.served and not desc.family.flow else Family.SD1
    native = desc.native or family.native_for(v_prediction=desc.prediction is not None)
    variant = variant_of(name.lower(), "", {})
    return Traits(family, (native, native), *family.defaults(variant), variant, desc.inpaint, 8,
                  desc.context or family.context)


def initial_traits(ref: ModelRef) -> Traits:
    """Traits before loading, from configs on disk (cheap json reads), the file's header, or the name."""
    if ref.source == "builtin":
        builtin = builtin_models.find(ref.location)
        return builtin.traits if builtin is not None else guess(ref.id)  # the load will say what is wrong
    if ref.source == "folder" or (ref.source == "single_file" and ref.config and os.path.isdir(ref.config)):
        configs = folder_configs(ref.location if ref.source == "folder" else ref.config)
        check_supported(configs[0], ref.id)  # fail at start-up, not at the first job
        name = ref.id + " " + os.path.basename(ref.config or "")
        return detect(name, *configs)
    if ref.source == "single_file":
        from .single_file import describe_file

        try:
            desc = describe_file(ref.location)
        except EngineError:
            return guess(ref.id)  # the load will say what is wrong
        return desc_traits(desc, ref.id) if desc.family else guess(ref.id)
    return _cached_hub_traits(ref.id)


def _cached_hub_traits(repo: str) -> Traits:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return guess(repo)
    configs = []
    for names in (("model_index.json",), ("unet/config.json", "transformer/config.json"), ("vae/config.json",),
                  ("scheduler/scheduler_config.json",)):
        found = [try_to_load_from_cache(repo, name) for name in names]
        configs.append(next((read_json(p) for p in found if isinstance(p, str)), None))
    return detect(repo, *configs) if configs[0] else guess(repo)


def _library_base(ref: ModelRef, library: Library) -> ModelRef:
    """A transformer-only file named at start-up without a config folder takes the library's base folder
    of its model, as the library's own files do (scan.base_for); anything else stays as it is."""
    from .single_file import describe_file

    try:
        desc = describe_file(ref.location)
    except EngineError:  # unreadable: loading it says so
        return ref
    base = base_for(desc, base_folders(library.entries())) if desc.transformer and desc.problem is None else None
    if base is None:
        return ref
    log.info("model %s: its text encoders and VAE come from the library's %s", ref.id, base)
    return dataclasses.replace(ref, config=base)
