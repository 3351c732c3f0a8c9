"""The Engine: serves several models, loads them on demand (LRU), and runs jobs on a worker thread.

All methods are thread-safe; ``run`` and ``load`` hold one lock (one job at a time per engine),
``models``/``model_info``/``schedulers`` never wait for a running job. Nothing here touches asyncio.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

from PIL import Image

from .cache import LRUCache
from .controlnet import ControlNets, check_fits
from .device import free_memory, resolve_device, resolve_dtype
from .families import Traits, check_supported, detect, folder_configs, guess, read_json
from .loading import LoadedModel, LoadOptions, demo_traits, load_model
from .lora import LoraLibrary
from .refiner import Refiner
from .refs import ModelRef, parse_ref
from .runner import Extras, run_job
from .safety import DEFAULT_CHECKER, SafetyChecker
from .schedulers import scheduler_names
from .types import CancelledFn, EngineError, EngineJob, JobCancelled, ModelInfo, ProgressFn

log = logging.getLogger(__name__)


class Engine:
    """Hosts diffusers pipelines for the models it serves; the first model is the default.

    Power features (docs/features.md): ``loras_dir`` (a folder of .safetensors LoRAs),
    ``control_models`` (ControlNet hub ids or folders), ``refiner`` (an SDXL refiner reference) and
    ``safety_checker`` (False = off, True = the stock checker, or a reference to one).
    """

    def __init__(self, models: Sequence[str | os.PathLike], *, device: str = "auto", dtype: str = "auto", max_loaded: int = 2,
                 attention_slicing: bool = False, vae_tiling: bool = False, cpu_offload: bool = False,
                 models_dir: str | None = None, loras_dir: str | os.PathLike | None = None,
                 control_models: Sequence[str | os.PathLike] = (), refiner: str | os.PathLike | None = None,
                 safety_checker: bool | str | os.PathLike = False):
        if isinstance(models, (str, os.PathLike)):
            models = [models]
        if not models:
            raise EngineError("no model to serve; name at least one (for example 'easel-demo')", field="model")
        if max_loaded < 1:
            raise EngineError(f"max_loaded must be at least 1 (got {max_loaded})", field="max_loaded")
        self.device: str = resolve_device(device)
        self.dtype: str = resolve_dtype(dtype, self.device)
        self._options = LoadOptions(self.device, (dtype or "auto").lower(), self.dtype,
                                    attention_slicing, vae_tiling, cpu_offload)
        self._refs: dict[str, ModelRef] = {}
        self._aliases: dict[str, str] = {}
        self._infos: dict[str, ModelInfo] = {}
        for item in models:
            text = os.fspath(item)
            ref = parse_ref(text, models_dir)
            model_id = ref.id
            n = 2
            while model_id in self._refs:
                model_id, n = f"{ref.id}-{n}", n + 1
            if model_id != ref.id:
                log.warning("two served models are both called %r; the one from %s is %r", ref.id, text, model_id)
                ref = dataclasses.replace(ref, id=model_id)
            self._refs[model_id] = ref
            for alias in (text, ref.location, os.path.basename(ref.location)):
                self._aliases.setdefault(alias, model_id)
            self._infos[model_id] = _info(ref, _initial_traits(ref))
        self._cache: LRUCache[LoadedModel] = LRUCache(max_loaded)
        self._loras = LoraLibrary(loras_dir)
        self._controls = ControlNets(control_models, self._options, models_dir)
        self._refiner = Refiner(refiner, self._options, models_dir)
        checker = DEFAULT_CHECKER if safety_checker is True else (safety_checker or None)
        self._safety = SafetyChecker(checker, self.device, self.dtype)
        self._lock = threading.RLock()
        self._info_lock = threading.Lock()
        self._closed = False
        self.load_count = 0  # how many times weights were loaded (tests, diagnostics)
        log.info("engine: %s, %s, models %s", self.device, self.dtype, ", ".join(self._refs))

    # ------------------------------------------------------------------ model catalogue

    def models(self) -> list[ModelInfo]:
        """All served models (loaded or not); the first is the default."""
        with self._info_lock:
            return [dataclasses.replace(info) for info in self._infos.values()]

    def model_info(self, ref: str | None) -> ModelInfo:
        """Info for ``ref`` (an id, or the reference the server was started with); None = default."""
        model_id = self._resolve(ref)
        with self._info_lock:
            return dataclasses.replace(self._infos[model_id])

    def schedulers(self) -> list[str]:
        return scheduler_names()

    def loras(self) -> list[str]:
        """Ids of the LoRAs in the LoRA folder (rescanned on every call)."""
        return self._loras.names()

    def control_models(self) -> list[str]:
        """Ids of the ControlNets jobs may name as ``control_model``."""
        return self._controls.ids()

    def refiners(self) -> list[str]:
        """The configured SDXL refiner's id (empty: none)."""
        return self._refiner.ids()

    @property
    def safety_checker(self) -> bool:
        return self._safety.enabled

    def _resolve(self, ref: str | None) -> str:
        if ref is None or ref == "":
            return next(iter(self._refs))
        if ref in self._refs:
            return ref
        if ref in self._aliases:
            return self._aliases[ref]
        served = ", ".join(self._refs)
        raise EngineError(f"unknown model {ref!r}; this server serves: {served}. Pick one of those, or restart "
                          "the server with that model added to its model list", field="model", code="unknown_model")

    # ------------------------------------------------------------------ loading

    def load(self, ref: str | None, progress: ProgressFn | None = None) -> ModelInfo:
        """Load ``ref`` now (otherwise the first job loads it); returns its updated info."""
        model_id = self._resolve(ref)
        with self._lock:
            self._check_open()
            self._get(model_id, progress, None)
        return self.model_info(model_id)

    def pipeline(self, ref: str | None, mode: str = "txt2img") -> Any:
        """The diffusers pipeline that serves ``mode`` for ``ref`` (loads it if needed). For tests and tools."""
        model_id = self._resolve(ref)
        with self._lock:
            self._check_open()
            return self._get(model_id, None, None).pipeline(mode)

    def _get(self, model_id: str, progress: ProgressFn | None, cancelled: CancelledFn | None) -> LoadedModel:
        loaded = self._cache.get(model_id)
        if loaded is not None:
            return loaded
        for old_id, old in self._cache.make_room():
            self._unload(old_id, old)
        loaded = load_model(self._refs[model_id], self._options, progress, cancelled)
        self.load_count += 1
        self._cache.put(model_id, loaded)
        with self._info_lock:
            self._infos[model_id] = _info(self._refs[model_id], loaded.traits, loaded=True)
        return loaded

    def _unload(self, model_id: str, loaded: LoadedModel) -> None:
        alive = loaded.release()
        with self._info_lock:
            self._infos[model_id].loaded = False
        # Plain reference counting frees the modules; a full gc (0.5 s with torch and diffusers
        # imported) only runs when something still holds them through a reference cycle.
        free_memory(self.device, collect=any(ref() is not None for ref in alive))
        log.info("unloaded %s", model_id)

    def loaded_models(self) -> list[str]:
        """Ids of the models in memory, least recently used first."""
        with self._lock:
            return self._cache.keys()

    # ------------------------------------------------------------------ running

    def run(self, job: EngineJob, progress: ProgressFn, cancelled: CancelledFn) -> list[Image.Image]:
        """Run one job (loading its model if needed): RGB images of job.width x job.height, one per seed.

        Raises JobCancelled within one step of ``cancelled()`` turning true, EngineError for bad jobs
        and models that cannot load. Call it from a worker thread, never from an event loop.
        """
        model_id = self._resolve(job.model)
        with self._lock:
            self._check_open()
            if cancelled():
                raise JobCancelled()
            self._check_features(job)
            loaded = self._get(model_id, progress, cancelled)
            extras = self._extras(job, loaded, progress, cancelled)
            with self._loras.applied(loaded.base, job.loras, model_id):
                images = run_job(loaded, job, progress, cancelled, extras)
            return self._safety.apply(images, progress)

    def _check_features(self, job: EngineJob) -> None:
        """Cheap checks before any loading: names that must exist."""
        for name, _ in job.loras:
            self._loras.path(name)
        if job.control_model is not None:
            self._controls.resolve(job.control_model)
        self._refiner.check(job)

    def _extras(self, job: EngineJob, loaded: LoadedModel, progress: ProgressFn, cancelled: CancelledFn) -> Extras:
        """Load what the job's features need: its ControlNet and the refiner."""
        extras = Extras()
        self._refiner.check(job, loaded)
        if job.control_model is not None and job.control_strength > 0:
            if job.control_image is None:
                raise EngineError("a control model needs a control image: send the sketch as attachment 'control'",
                                  field="control")
            extras.controlnet = self._controls.get(job.control_model, loaded.dtype, progress, cancelled)
            check_fits(extras.controlnet, loaded, job.control_model)
        if job.refiner:
            extras.refiner = self._refiner.get(progress, cancelled)
        return extras

    def close(self) -> None:
        """Unload every model and free memory; the engine refuses work afterwards."""
        with self._lock:
            for model_id, loaded in self._cache.pop_all():
                self._unload(model_id, loaded)
            self._controls.close()
            self._refiner.close()
            self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError("the engine is closed", code="engine_closed")

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _info(ref: ModelRef, traits: Traits, loaded: bool = False) -> ModelInfo:
    return ModelInfo(id=ref.id, family=traits.family, native=traits.native, default_steps=traits.default_steps,
                     default_guidance=traits.default_guidance, source=ref.source, loaded=loaded,
                     few_step=traits.few_step)


def _initial_traits(ref: ModelRef) -> Traits:
    """Traits before loading, from configs on disk (cheap json reads) or from the name."""
    if ref.source == "builtin":
        try:
            return demo_traits(importlib.import_module("easel.server.demo.model"))
        except ImportError:
            return Traits("demo", (64, 64), 20, 7.5)
    if ref.source == "folder" or (ref.source == "single_file" and ref.config and os.path.isdir(ref.config)):
        configs = folder_configs(ref.location if ref.source == "folder" else ref.config)
        check_supported(configs[0], ref.id)  # fail at start-up, not at the first job
        name = ref.id + " " + os.path.basename(ref.config or "")
        return detect(name, *configs)
    if ref.source == "single_file":
        return guess(ref.id)
    return _cached_hub_traits(ref.id)


def _cached_hub_traits(repo: str) -> Traits:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return guess(repo)
    configs = []
    for name in ("model_index.json", "unet/config.json", "vae/config.json", "scheduler/scheduler_config.json"):
        path = try_to_load_from_cache(repo, name)
        configs.append(read_json(path) if isinstance(path, str) else None)
    return detect(repo, *configs) if configs[0] else guess(repo)
