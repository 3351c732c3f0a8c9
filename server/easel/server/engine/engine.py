"""The Engine: serves several models, loads them on demand (LRU), and runs jobs on a worker thread.

All methods are thread-safe; ``run`` and ``load`` hold one lock (one job at a time per engine),
``models``/``model_info``/``schedulers`` never wait for a running job. Nothing here touches asyncio.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

from PIL import Image

from ...client.codes import ErrorCode
from ...client.protocol import MAX_CONTROLS, Control
from ..background import DEFAULT_MODEL as DEFAULT_BACKGROUND
from ..families import MODE_WORDS
from ..library.scan import Library
from ..upscalers import Upscalers
from .cache import LRUCache
from .catalog import Catalog
from .controlnet import ControlLayer, ControlNets, check_fits, inpaint_guide
from .device import free_memory, resolve_device, resolve_dtype
from .loading import LoadedModel, LoadOptions, load_model
from .lora import LoraLibrary
from .references import References
from .refiner import Refiner
from .refs import models_roots
from .runner import Extras, run_job
from .safety import DEFAULT_CHECKER, SafetyChecker
from .schedulers import scheduler_names
from .tiny_vae import TinyDecoders
from .types import CancelledFn, EngineError, EngineJob, JobCancelled, ModelInfo, ProgressFn

log = logging.getLogger(__name__)


class Engine:
    """Hosts diffusers pipelines for the models it serves; the first model is the default.

    Power features (docs/features.md): ``loras_dir`` (a folder of .safetensors LoRAs),
    ``control_models`` (ControlNet hub ids or folders), ``refiner`` (an SDXL refiner reference) and
    ``safety_checker`` (False = off, True = the stock checker, or a reference to one). ``models_dir``
    (one folder or several) confines model paths and is scanned: its checkpoints, diffusers folders,
    LoRAs and ControlNets are offered too (library/, docs/models.md). ``cpu_offload``: False/"none",
    True/"model" (model CPU offload) or "sequential" (per layer: least memory, slowest). ``sd3_t5=False``
    loads SD 3/3.5 without their T5 text encoder. ``channels_last`` (auto|on|off) and ``compile`` are the
    speed options of speed.py. ``decoder`` (full|tiny) and ``live_decoder`` (auto|tiny|full) pick the VAE
    decoder of results and of live frames (tiny_vae.py). ``openvino`` (auto|on|off) runs SD UNets and VAE
    decoders in float32 on the CPU through OpenVINO (openvino_path.py).
    """

    def __init__(self, models: Sequence[str | os.PathLike], *, device: str = "auto", dtype: str = "auto", max_loaded: int = 2,
                 attention_slicing: bool = False, vae_tiling: bool = False, cpu_offload: bool | str = False,
                 models_dir: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
                 loras_dir: str | os.PathLike | None = None,
                 control_models: Sequence[str | os.PathLike] = (), refiner: str | os.PathLike | None = None,
                 safety_checker: bool | str | os.PathLike = False, sd3_t5: bool = True,
                 channels_last: str = "auto", compile: bool = False,
                 ip_adapters: Sequence[str | os.PathLike] = (), decoder: str = "full", live_decoder: str = "auto",
                 prefer_inpaint_models: bool = True, background_model: str = DEFAULT_BACKGROUND,
                 openvino: str = "auto"):
        if isinstance(models, (str, os.PathLike)):
            models = [models]
        if max_loaded < 1:
            raise EngineError(f"max_loaded must be at least 1 (got {max_loaded})", field="max_loaded")
        roots = models_roots(models_dir)
        try:
            self.library: Library | None = Library(roots) if roots else None
        except ValueError as exc:
            raise EngineError(str(exc), field="models_dir") from None
        self._catalog = Catalog(models, roots, self.library)
        self.device: str = resolve_device(device)
        self.dtype: str = resolve_dtype(dtype, self.device)
        self._options = LoadOptions(device=self.device, dtype_requested=(dtype or "auto").lower(),
                                    dtype_default=self.dtype, attention_slicing=attention_slicing,
                                    vae_tiling=vae_tiling, cpu_offload=cpu_offload, sd3_t5=sd3_t5,
                                    channels_last=channels_last, compile=compile, openvino=openvino)
        self._cache: LRUCache[LoadedModel] = LRUCache(max_loaded)
        self._loras = LoraLibrary(loras_dir, self.library)
        self._controls = ControlNets(control_models, self._options, roots, self.library,
                                     max_loaded=MAX_CONTROLS + 1)  # a job's layers and guide stay loaded
        self._refiner = Refiner(refiner, self._options, roots)
        self._references = References(ip_adapters, roots, self.device)
        self._upscalers = Upscalers(self.library, self.device)
        self._decoders = TinyDecoders(decoder, live_decoder, roots, self.device)
        if decoder == "tiny":  # the default model's tiny decoder missing: fail at start-up, not at the first job
            self._decoders.check(self._catalog.traits(self._resolve(None)).family)
        checker = DEFAULT_CHECKER if safety_checker is True else (safety_checker or None)
        self._safety = SafetyChecker(checker, self.device, self.dtype)
        self._lock = threading.RLock()
        self._closed = False
        self.prefer_inpaint_models = prefer_inpaint_models  # selection_modes.inpaint_model
        self.background_model = background_model  # the background mode's subject (background.py)
        self.load_count = 0  # how many times weights were loaded (tests, diagnostics)
        log.info("engine: %s, %s, models %s", self.device, self.dtype, ", ".join(self._catalog.ids()))

    # ------------------------------------------------------------------ model catalogue

    def models(self) -> list[ModelInfo]:
        """All served models (loaded or not), the default first; the models folders are rescanned, and
        each model lists the LoRAs and control kinds that fit it."""
        if self.library is not None:
            self.library.scan()  # what a client asks for is what is on disk now
        self._loras.rescan()
        infos = [self._runtime(info) for info in self._catalog.infos()]
        for info in infos:
            traits = self._catalog.traits(info.id)
            info.controls = [*self._controls.kinds_for(traits.family, traits.context),
                             *self._references.kinds_for(traits.family, traits.context)]
        if self._loras.enabled:
            entries = self._loras.entries()
            for info in infos:
                traits = self._catalog.traits(info.id)
                info.loras = self._loras.fitting(traits.context, traits.family, entries)
        return infos

    def model_info(self, ref: str | None) -> ModelInfo:
        """Info for ``ref`` (an id, or the reference the server was started with); None = default."""
        return self._runtime(self._catalog.info(self._resolve(ref)))

    def _runtime(self, info: ModelInfo) -> ModelInfo:
        """``info`` with the dtype it runs in (the engine's until it is loaded) and its offload mode."""
        loaded = self._cache.peek(info.id)
        info.dtype = loaded.dtype if loaded is not None else self.dtype
        info.offload = self._options.offload_mode if self.device != "cpu" else "none"
        return info

    def schedulers(self) -> list[str]:
        return scheduler_names()

    def loras(self) -> list[str]:
        """Ids of the LoRAs in the LoRA folder and the models folders (rescanned on every call)."""
        return self._loras.names()

    def control_models(self) -> list[str]:
        """Ids of the ControlNets jobs may name as ``control_model``."""
        return self._controls.ids()

    def check_controls(self, ref: str | None, controls: Sequence[Control]) -> list[str]:
        """The ControlNet id each control layer of a job on model ``ref`` would use; EngineError (its field
        ``controls[i]....``) for a layer none fits."""
        model_id = self._resolve(ref)
        traits = self._catalog.traits(model_id)
        self._references.choose(controls, traits.family, traits.context, model_id)
        return [i for i in self._controls.choose(controls, traits.family, traits.context) if i is not None]

    def refiners(self) -> list[str]:
        """The configured SDXL refiner's id (empty: none)."""
        return self._refiner.ids()

    @property
    def upscalers(self) -> Upscalers:
        """The upscaler models of the models folders (ESRGAN & co.; easel.server.upscalers)."""
        return self._upscalers

    @property
    def safety_checker(self) -> bool:
        return self._safety.enabled

    def _resolve(self, ref: str | None) -> str:
        return self._catalog.resolve(ref)

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
        loaded = load_model(self._catalog.ref(model_id), self._options, progress, cancelled)
        self.load_count += 1
        self._cache.put(model_id, loaded)
        self._catalog.set_loaded(model_id, loaded.traits)
        return loaded

    def _unload(self, model_id: str, loaded: LoadedModel) -> None:
        alive = loaded.release()
        self._catalog.set_loaded(model_id, None)
        # Plain reference counting frees the modules; a full gc (0.5 s with torch and diffusers
        # imported) only runs when something still holds them through a reference cycle.
        free_memory(self.device, collect=any(ref() is not None for ref in alive))
        log.info("unloaded %s", model_id)

    def loaded_models(self) -> list[str]:
        """Ids of the models in memory, least recently used first (never waits for a load or a job)."""
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
            self._check_features(job, model_id)
            loaded = self._get(model_id, progress, cancelled)
            extras = self._extras(job, loaded, progress, cancelled)
            with self._loras.applied(loaded.base, job.loras, model_id):
                images = run_job(loaded, job, progress, cancelled, extras)
            return self._safety.apply(images, progress)

    def _check_features(self, job: EngineJob, model_id: str) -> None:
        """Cheap checks before any loading: names that must exist, LoRAs of the model's family."""
        traits = self._catalog.traits(model_id)
        asked = {"negative_prompt": bool(job.negative_prompt), "scheduler": job.scheduler not in (None, "euler"),
                 "control_model": job.control_model is not None, "controls": bool(job.controls), "refiner": job.refiner,
                 "variation_seed": job.variation_seed is not None, "loras": bool(job.loras),
                 "regions": bool(job.regions)}
        why = traits.family.mode_unsupported(job.mode) if job.mode in MODE_WORDS else None  # unknown: validate
        if why:  # an edit-only model (Qwen-Image-Edit) and no picture to edit
            raise EngineError(f"model {model_id!r} ({traits.family}) does not do {MODE_WORDS[job.mode]}: {why}; send "
                              "the picture to edit as the image (easel generate --image)", field="image",
                              code=ErrorCode.UNSUPPORTED_FEATURE)
        for feature, used in asked.items():
            why = traits.family.unsupported(feature) if used else None
            if why:
                raise EngineError(f"model {model_id!r} ({traits.family}) does not support {feature}: {why}; "
                                  f"leave {feature} unset for it", field=feature, code=ErrorCode.UNSUPPORTED_FEATURE)
            why = traits.family.control_unsupported(job.mode) if used and feature in ("control_model", "controls") else None
            if why:  # SD 3/3.5 ControlNets: text to image only
                raise EngineError(f"model {model_id!r} ({traits.family}) does not support {feature} for "
                                  f"{MODE_WORDS[job.mode]}: {why}; leave {feature} unset, or send no image (text to "
                                  "image)", field=feature, code=ErrorCode.UNSUPPORTED_FEATURE)
        for name, _ in job.loras:
            self._loras.check_fits(name, model_id, traits.context, traits.family)
        if job.control_model is not None:
            self._controls.resolve(job.control_model)
        self._controls.choose(job.controls or [], traits.family, traits.context)
        self._references.choose(job.controls or [], traits.family, traits.context, model_id)
        self._refiner.check(job)

    def _extras(self, job: EngineJob, loaded: LoadedModel, progress: ProgressFn, cancelled: CancelledFn) -> Extras:
        """Load what the job's features need: its ControlNet and the refiner."""
        extras = Extras()
        self._refiner.check(job, loaded)
        for layer in self._control_layers(job, loaded):
            layer.model = self._controls.get(layer.id, loaded.dtype, progress, cancelled)
            check_fits(layer.model, loaded, layer.id)
            extras.controls.append(layer)
        extras.references = self._references.layers(job.controls or [], job.attached, loaded.traits.family,
                                                    loaded.traits.context, loaded.dtype)
        if job.refiner:
            extras.refiner = self._refiner.get(progress, cancelled)
        extras.decoder = self._decoders.for_job(job, loaded)
        return extras

    def _control_layers(self, job: EngineJob, loaded: LoadedModel) -> list[ControlLayer]:
        """The job's control layers that steer (strength above 0), their ControlNets not loaded yet: the
        ``control_model`` guide, then ``controls`` with their images from ``attached``."""
        layers = []
        if job.control_model is not None and job.control_strength > 0:
            if job.control_image is None:
                raise EngineError("a control model needs a control image: send the sketch as attachment 'control'",
                                  field="control")
            control_id = self._controls.resolve(job.control_model)
            layers.append(ControlLayer(control_id, None, job.control_image, job.control_strength,
                                       mode=self._controls.union_mode(control_id, None)))
        controls = job.controls or []
        ids = self._controls.choose(controls, loaded.traits.family, loaded.traits.context)
        for i, (control, control_id) in enumerate(zip(controls, ids, strict=True)):
            if control_id is None:  # a reference layer (references.py)
                continue
            image = job.attached.get(control.image)
            if image is None or image.size != (job.width, job.height):
                got = "none" if image is None else f"{image.width}x{image.height}"
                raise EngineError(f"control layer {i + 1} needs its image {control.image!r} at the job's size "
                                  f"{job.width}x{job.height} (got {got})", field=f"controls[{i}].image")
            mode = self._controls.union_mode(control_id, control.kind)
            if control.kind == "inpaint" and job.mode == "inpaint" and job.mask is not None \
                    and not loaded.traits.family.flow:  # the selection marked on the guide (no mask: as is)
                image = inpaint_guide(image, job.mask, mode is not None)
            if control.strength > 0:
                layers.append(ControlLayer(control_id, None, image, control.strength, control.start, control.end, mode))
        return layers

    def close(self) -> None:
        """Unload every model and free memory; the engine refuses work afterwards."""
        with self._lock:
            for model_id, loaded in self._cache.pop_all():
                self._unload(model_id, loaded)
            self._controls.close()
            self._refiner.close()
            self._decoders.close()
            self._references.close()
            self._upscalers.close()
            self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError("the engine is closed", code=ErrorCode.ENGINE_CLOSED)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
