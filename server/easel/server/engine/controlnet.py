"""ControlNet: control models the server offers, loaded on first use, and the pipelines that use them.

A control model is a hub id (``lllyasviel/control_v11p_sd15_scribble``) or a local folder holding a
ControlNetModel (``config.json`` + weights); ids are the hub id or the folder's name. A job's
pipeline is ``StableDiffusion[XL]ControlNet{,Img2Img,Inpaint}Pipeline.from_pipe(mode pipeline,
controlnet=...)``: it shares every module of the loaded model, so nothing is copied. Control models
are kept in a small LRU (``max_loaded``), in the base model's dtype.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import diffusers
import torch

from ..families import SKETCH
from ..library.scan import Entry, Library
from .cache import LRUCache
from .device import DTYPES, free_memory
from .loading import _DTYPE_KW, LoadedModel, LoadOptions
from .refs import _HUB_ID, _find
from .types import CancelledFn, EngineError, JobCancelled, Progress, ProgressFn

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ControlRef:
    ref: str  # as given
    id: str  # what clients send as ``control_model``
    source: str  # "hub" | "folder"
    location: str


def parse_control_ref(text: str, models_dir: str | Sequence[str] | None = None) -> ControlRef:
    """A ControlNet reference named at start-up (so it may lie outside the models folders): a folder
    with a ControlNetModel config.json, or a hub id."""
    text = (text or "").strip()
    try:
        found = _find(text, models_dir, confine=False) if text else None
    except EngineError as exc:  # outside --models-dir
        raise EngineError(f"control model: {exc}", field="control_model") from None
    if found is not None:
        if not os.path.isfile(os.path.join(found, "config.json")):
            raise EngineError(f"control model {text!r}: {found} is not a folder holding a ControlNet (config.json "
                              "and diffusion_pytorch_model.safetensors)", field="control_model")
        return ControlRef(text, os.path.basename(os.path.normpath(found)), "folder", found)
    if not _HUB_ID.match(text):
        raise EngineError(f"control model {text!r}: no such folder, and not a Hugging Face id like "
                          "'lllyasviel/control_v11p_sd15_scribble'", field="control_model")
    return ControlRef(text, text, "hub", text)


class ControlNets:
    """The control models a server offers; ``get`` loads one (LRU of ``max_loaded``)."""

    def __init__(self, refs: Sequence[str | os.PathLike], options: LoadOptions,
                 models_dir: str | Sequence[str] | None = None, library: Library | None = None, max_loaded: int = 1):
        self._library = library
        self._lib_refs: dict[str, ControlRef] = {}  # models-folder control models resolved so far
        self._refs: dict[str, ControlRef] = {}
        self._aliases: dict[str, str] = {}
        for item in refs:
            ref = parse_control_ref(os.fspath(item), models_dir)
            if ref.id in self._refs:
                raise EngineError(f"two control models are both called {ref.id!r}; rename one folder",
                                  field="control_model")
            self._refs[ref.id] = ref
            self._aliases.setdefault(ref.ref, ref.id)
        self._options = options
        self._cache: LRUCache[Any] = LRUCache(max_loaded)
        self._lock = threading.Lock()

    def ids(self) -> list[str]:
        """The named control models, then the usable ones of the models folders."""
        return [*self._refs, *(i for i, e in self._found().items() if e.problem is None)]

    def _found(self) -> dict[str, Entry]:
        """Control models of the models folders (``ControlNet/``, ``controlnet/``) by id."""
        found: dict[str, Entry] = {}
        for entry in self._library.entries("controlnet") if self._library is not None else []:
            if entry.id not in self._refs:
                found.setdefault(entry.id, entry)
        return found

    def resolve(self, name: str) -> str:
        if name in self._refs:
            return name
        if name in self._aliases:
            return self._aliases[name]
        entry = self._found().get(name)
        if entry is not None:
            if entry.problem is not None:
                raise EngineError(f"control model {name!r} ({entry.path}) cannot be used: {entry.problem}",
                                  field="control_model", code="model_load_failed")
            self._lib_refs[name] = ControlRef(entry.path, name, "folder", entry.path)
            return name
        ids = self.ids()
        offer = f"this server offers: {', '.join(ids)}" if ids else \
            "this server offers none (start it with --control-model ID_OR_FOLDER)"
        raise EngineError(f"unknown control model {name!r}; {offer}", field="control_model",
                          code="unknown_control_model")

    def get(self, name: str, dtype: str, progress: ProgressFn, cancelled: CancelledFn) -> Any:
        """The ControlNetModel ``name`` in ``dtype`` on the engine's device (loaded if needed)."""
        control_id = self.resolve(name)
        key = f"{control_id}|{dtype}"
        with self._lock:
            model = self._cache.get(key)
            if model is not None:
                return model
            for _, old in self._cache.make_room():
                del old
                free_memory(self._options.device)
            if cancelled():
                raise JobCancelled()
            model = self._load(self._refs.get(control_id) or self._lib_refs[control_id], dtype, progress)
            self._cache.put(key, model)
            return model

    def _load(self, ref: ControlRef, dtype: str, progress: ProgressFn) -> Any:
        from diffusers import ControlNetModel

        progress(Progress("load", 0, 1, f"loading control model {ref.id}"))
        try:
            model = ControlNetModel.from_pretrained(ref.location, **{_DTYPE_KW: DTYPES[dtype]})
            model.to(self._options.device)
        except Exception as exc:
            hint = ("run `hf download " + ref.id + "` while online" if ref.source == "hub"
                    else "check that the folder holds a complete ControlNet")
            raise EngineError(f"could not load control model {ref.id!r} from {ref.location}: {type(exc).__name__}: "
                              f"{str(exc)[:300]}; {hint}", field="control_model", code="model_load_failed") from None
        model.requires_grad_(False)
        progress(Progress("load", 1, 1, f"loaded control model {ref.id}"))
        log.info("loaded control model %s (%s)", ref.id, dtype)
        return model

    def close(self) -> None:
        with self._lock:
            self._cache.pop_all()


def check_fits(controlnet: Any, lm: LoadedModel, control_id: str) -> None:
    """EngineError (field control_model) when the ControlNet was made for another model family."""
    unet = lm.base.unet.config
    cn = controlnet.config
    mismatch = [name for name in ("cross_attention_dim", "addition_embed_type")
                if _norm(getattr(cn, name, None)) != _norm(getattr(unet, name, None))]
    if mismatch:
        family = lm.traits.family.pipeline_label
        raise EngineError(f"control model {control_id!r} does not fit model {lm.ref.id!r} ({family}): their "
                          f"{', '.join(mismatch)} differ; use a ControlNet made for {family}", field="control_model",
                          code="control_model_mismatch")


def _norm(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def control_pipeline(lm: LoadedModel, mode: str, controlnet: Any) -> Any:
    """The ControlNet twin of ``lm``'s pipeline for ``mode``, sharing all of its modules."""
    if lm.traits.inpaint_unet:
        mode = "inpaint"
    cls = getattr(diffusers, lm.traits.family.pipeline_class(mode, control=SKETCH))
    pipe = cls.from_pipe(lm.base, controlnet=controlnet, **{_DTYPE_KW: lm.base.dtype})
    pipe.set_progress_bar_config(disable=True)
    if lm.channels_last:  # the shared UNet and VAE already are
        controlnet.to(memory_format=torch.channels_last)
    if lm.offload_mode == "sequential":  # the base modules keep their per-module hooks
        controlnet.to(lm.offload_device)
    elif lm.offload_device is not None:
        pipe.enable_model_cpu_offload(device=lm.offload_device)
        lm._offload_owner = pipe  # the next plain pipeline re-hooks the shared modules
    return pipe


def control_kwargs(accepted: Any, image: Any, strength: float) -> dict[str, Any]:
    """Call arguments: the control image (``image`` for text to image, else ``control_image``) and scale."""
    key = "control_image" if "control_image" in accepted else "image"
    return {key: image.convert("RGB"), "controlnet_conditioning_scale": float(strength)}
