"""Loading one model (built-in, hub id, folder or single file) into a ready-to-run LoadedModel.

A LoadedModel holds one set of weights. The pipelines for the three modes are made from it with
``AutoPipelineFor*.from_pipe`` (no weights are copied or loaded again) and cached on it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import diffusers
import numpy as np
import torch
from diffusers import (
    AutoPipelineForImage2Image,
    AutoPipelineForInpainting,
    AutoPipelineForText2Image,
    DiffusionPipeline,
)

from ...client.codes import ErrorCode
from .. import builtin_models
from ..families import Family
from ..settings import CHANNELS_LAST, OFFLOAD_MODES
from ..traits import INPAINT_CLASSES, SUPPORTED_CLASSES, Traits, detect, folder_configs
from . import flow, hub, openvino_path, qwen_edit, single_file
from .device import DTYPES, model_dtype
from .oom import LoadSize, is_out_of_memory, load_message
from .preview import LatentPreview
from .refs import ModelRef
from .speed import CompiledShapes, compile_pipeline, set_channels_last, wants_channels_last
from .types import CancelledFn, EngineError, JobCancelled, Progress, ProgressFn

log = logging.getLogger(__name__)

_AUTO = {"txt2img": AutoPipelineForText2Image, "img2img": AutoPipelineForImage2Image,
         "inpaint": AutoPipelineForInpainting}
# diffusers renamed ``torch_dtype`` to ``dtype`` (the old name warns); older versions only know the old one
_DTYPE_KW = "dtype" if hasattr(diffusers.utils, "_resolve_dtype") else "torch_dtype"


@dataclass(kw_only=True)
class LoadOptions:
    """How models load: the engine's device and dtype, and the load settings of ``easel serve``
    (settings.py declares them; built by keyword, ``LoadOptions(device=…, attention_slicing=…)``)."""

    device: str
    dtype_requested: str  # as asked: "auto" or a dtype name
    dtype_default: str  # resolved for the device
    attention_slicing: bool = False
    vae_tiling: bool = False
    cpu_offload: bool | str = False  # True/"model" or "sequential"; only honoured on an accelerator
    sd3_t5: bool = True  # False: SD 3/3.5 load without their T5 encoder (far less memory, weaker prompts)
    channels_last: str = "auto"  # auto | on | off (speed.py)
    compile: bool = False  # torch.compile the denoiser and VAE decoder (speed.py)
    openvino: str = "auto"  # auto | on | off: the UNet and VAE decoder through OpenVINO (openvino_path.py)

    def __post_init__(self) -> None:
        openvino_path.check_choice(self.openvino)
        if self.channels_last not in CHANNELS_LAST:
            raise EngineError(f"unknown channels_last choice {self.channels_last!r}; use one of "
                              f"{', '.join(CHANNELS_LAST)}", field="channels_last")
        mode = {True: "model", False: "none", None: "none"}.get(self.cpu_offload, self.cpu_offload)  # type: ignore[call-overload]
        if mode not in OFFLOAD_MODES:
            raise EngineError(f"unknown offload mode {self.cpu_offload!r}; use one of {', '.join(OFFLOAD_MODES)}",
                              field="offload")
        self.offload_mode: str = mode


@dataclass
class LoadedModel:
    """One model's weights plus the per-mode pipelines that share them."""

    ref: ModelRef
    traits: Traits
    dtype: str
    base: Any  # the loaded DiffusionPipeline
    preview: LatentPreview | None
    offload_device: str | None = None  # set when CPU offload is on
    offload_mode: str = "none"  # "model" | "sequential" when offload_device is set
    pipes: dict[str, Any] = field(default_factory=dict)
    channels_last: bool = False  # conv weights channels-last (speed.py)
    compiled: CompiledShapes | None = None  # set when torch.compile is on
    openvino: openvino_path.OpenVINOModel | None = None  # its UNet and decoder in OpenVINO (openvino_path.py)
    _offload_owner: Any = None

    def pipeline(self, mode: str) -> Any:
        """The pipeline for ``mode`` (inpainting models, 9-channel SD or FLUX.1 Fill, use their inpaint
        pipeline for every mode)."""
        if self.traits.inpaint_unet:
            mode = "inpaint"
        pipe = self.pipes.get(mode)
        if pipe is None:
            pipe = self.pipes[mode] = _from_pipe(self.base, mode, self.traits)
            pipe.set_progress_bar_config(disable=True)
        if self.offload_mode == "model" and self._offload_owner is not pipe:
            pipe.enable_model_cpu_offload(device=self.offload_device)  # re-hooks the shared modules
            self._offload_owner = pipe
        return pipe

    def release(self) -> list[weakref.ref]:
        """Drop every reference this object holds to weights; weak refs to the big modules come back
        so the caller can tell whether a garbage collection is needed to free them."""
        refs = [weakref.ref(m) for m in self.base.components.values() if isinstance(m, torch.nn.Module)]
        for pipe in [self.base, *self.pipes.values()]:
            if self.offload_device is not None:
                try:
                    pipe.remove_all_hooks()
                except Exception:  # already gone
                    pass
        self.pipes.clear()
        self.base = None
        self._offload_owner = None
        self.preview = None
        return refs


def _from_pipe(base: Any, mode: str, traits: Traits) -> Any:
    if traits.inpaint_unet and traits.flow:  # FLUX.1 Fill: its own pipeline (the auto inpaint one is FLUX.1's)
        return type(base).from_pipe(base, **{_DTYPE_KW: base.dtype})
    if traits.family.edits and (mode == "img2img" or not traits.family.inpaint_pipeline):
        # the edit pipeline (FLUX.2 Klein: its text-to-image one; Qwen-Image-Edit: for a selection too)
        return getattr(diffusers, traits.family.pipeline_class(mode)).from_pipe(base, **{_DTYPE_KW: base.dtype})
    try:
        return _AUTO[mode].from_pipe(base)
    except ValueError:  # e.g. an LCM pipeline has no inpaint twin: use the family's plain class
        return getattr(diffusers, traits.family.pipeline_class(mode)).from_pipe(base, **{_DTYPE_KW: base.dtype})


def check_supported(index: dict | None, name: str) -> None:
    """EngineError (model_load_failed) when a model_index names a pipeline class Easel does not serve."""
    cls = (index or {}).get("_class_name")
    if cls is not None and cls not in SUPPORTED_CLASSES:
        raise EngineError(
            f"model {name!r} is a {cls}; Easel serves Stable Diffusion 1.x/2.x, SDXL (including turbo/LCM/"
            f"lightning variants), {', '.join(f.label for f in Family if f.served and f.flow)} pipelines. "
            "Pick such a model.", field="model",
            code=ErrorCode.MODEL_LOAD_FAILED)


def load_model(ref: ModelRef, opts: LoadOptions, progress: ProgressFn | None,
               cancelled: CancelledFn | None = None) -> LoadedModel:
    """Load ``ref`` and prepare it for ``opts.device``; EngineError (field "model") with the fix on failure."""
    cancelled = cancelled or (lambda: False)
    say = progress or (lambda p: None)
    _quiet()
    t0 = time.perf_counter()
    size = LoadSize()
    try:
        builtin = _builtin(ref) if ref.source == "builtin" else None
        if builtin is not None:
            pipe, dtype, traits = _load_builtin(builtin, ref, opts, say)
        else:
            pipe, dtype, traits = _load_diffusers(ref, opts, say, cancelled, size)
        offload = _place(pipe, opts)
        channels_last = wants_channels_last(opts.channels_last, opts.device, dtype)
        if channels_last:
            set_channels_last(pipe)
        if opts.compile:
            compile_pipeline(pipe)
        accelerated = _openvino(pipe, traits, dtype, opts, say)
        preview = _fitted_preview(builtin) if builtin is not None else None
        preview = preview or LatentPreview.for_vae(pipe.vae, traits.vae_scale)
    except (EngineError, JobCancelled):
        raise
    except Exception as exc:
        if is_out_of_memory(exc):
            raise EngineError(load_message(ref.id, size, opts.device), field="model",
                              code=ErrorCode.OUT_OF_MEMORY) from None
        raise EngineError(f"could not load model {ref.id!r} from {ref.location}: {type(exc).__name__}: {str(exc).rstrip('.')}. "
                          f"{_HINTS[ref.source]}", field="model", code=ErrorCode.MODEL_LOAD_FAILED) from exc
    seconds = time.perf_counter() - t0
    log.info("loaded %s (%s, %s on %s%s) in %.2f s", ref.id, traits.family, dtype, opts.device,
             f", {opts.offload_mode} cpu offload" if offload else "", seconds)
    say(Progress("load", 1, 1, f"loaded {ref.id} in {seconds:.1f} s"))
    return LoadedModel(ref, traits, dtype, pipe, preview, opts.device if offload else None,
                       opts.offload_mode if offload else "none", channels_last=channels_last,
                       compiled=CompiledShapes() if opts.compile else None, openvino=accelerated)


def _openvino(pipe: Any, traits: Traits, dtype: str, opts: LoadOptions, say: ProgressFn) -> Any:
    """The model's UNet and VAE decoder in OpenVINO where ``opts.openvino`` wants them (openvino_path.py);
    a conversion that fails leaves the model on torch under ``auto`` and is an error under ``on``."""
    if not openvino_path.wanted(opts.openvino, opts.device, dtype, traits.family, getattr(pipe, "unet", None)):
        return None
    try:
        return openvino_path.OpenVINOModel(pipe, say)
    except Exception as exc:
        if opts.openvino == "on":
            raise EngineError(f"could not run the model through OpenVINO (--openvino on): {type(exc).__name__}: "
                              f"{str(exc)[:300]}", field="openvino", code=ErrorCode.MODEL_LOAD_FAILED) from None
        log.warning("OpenVINO conversion failed, the model runs on torch: %s: %s", type(exc).__name__, exc)
        return None


def _quiet() -> None:
    """No tqdm bars from diffusers/transformers on the server's console (progress goes to clients),
    and no "modules that should be kept in float32: []" warning at every SDXL img2img/inpaint."""
    diffusers.utils.logging.disable_progress_bar()
    modeling = logging.getLogger("diffusers.models.modeling_utils")
    if _empty_fp32_warning not in modeling.filters:
        modeling.addFilter(_empty_fp32_warning)
    try:
        import transformers

        transformers.utils.logging.disable_progress_bar()
    except (ImportError, AttributeError):
        pass


def _empty_fp32_warning(record: logging.LogRecord) -> bool:
    return "should be kept in float32: []" not in record.getMessage()


_HINTS = {
    "builtin": "The demo model ships with Easel; reinstall Easel if its files are missing.",
    "folder": "Check that it is a complete diffusers folder (model_index.json plus unet/, vae/, text_encoder/, "
              "tokenizer/ and scheduler/ with their weights).",
    "hub": "Check the id; if a download was interrupted, run `hf download <id>` to complete it.",
    "single_file": "Give it a config folder of the same architecture: 'model.safetensors#config=/path/to/"
                   "diffusers-folder' (only the folder's json/txt files are read).",
}


def _builtin(ref: ModelRef) -> builtin_models.BuiltinModel:
    builtin = builtin_models.find(ref.location)
    if builtin is None:
        raise EngineError(f"no built-in model {ref.id!r} in this installation; serve another model", field="model",
                          code=ErrorCode.MODEL_LOAD_FAILED)
    return builtin


def _load_builtin(builtin: builtin_models.BuiltinModel, ref: ModelRef, opts: LoadOptions,
                  say: ProgressFn) -> tuple[Any, str, Traits]:
    dtype = model_dtype(opts.dtype_requested, opts.dtype_default, opts.device, 0)
    say(Progress("load", 0, 1, f"loading {ref.id} ({dtype} on {opts.device})"))
    try:
        pipe = builtin.load(opts.device, DTYPES[dtype])
    except ImportError as exc:
        raise EngineError(f"the built-in demo model is not available in this installation ({exc}); reinstall "
                          "Easel or serve another model", field="model", code=ErrorCode.MODEL_LOAD_FAILED) from None
    vae_scale = int(getattr(pipe, "vae_scale_factor", builtin.traits.vae_scale))
    return pipe, dtype, dataclasses.replace(builtin.traits, vae_scale=vae_scale)


def _fitted_preview(builtin: builtin_models.BuiltinModel) -> LatentPreview | None:
    """A built-in model's own fitted latent->RGB map, when it ships one."""
    try:
        fitted = builtin.latent_preview() if builtin.latent_preview is not None else None
    except (ImportError, OSError, KeyError):
        return None
    return LatentPreview(np.array(fitted[0]), np.array(fitted[1])) if fitted else None


def _load_diffusers(ref: ModelRef, opts: LoadOptions, say: ProgressFn, cancelled: CancelledFn,
                    size: LoadSize) -> tuple[Any, str, Traits]:
    """The pipeline, its dtype and traits; ``size`` gets the weight files it reads and their dtype."""
    folder = ref.location
    if ref.source == "hub":
        def report(done: int, total: int) -> None:
            say(Progress("load", done, total, f"downloading {ref.id}: {done / 2**20:.0f} / {total / 2**20:.0f} MiB"))
        say(Progress("load", 0, 1, f"looking up {ref.id} on the Hugging Face hub"))
        folder = hub.fetch(ref.id, opts.dtype_default == "float16", report, cancelled)
    config_dir, desc = single_file_config(ref) if ref.source == "single_file" else (folder, None)
    index, unet, vae, sched = folder_configs(config_dir)
    check_supported(index, ref.id)
    weight_bytes = os.path.getsize(folder) if ref.source == "single_file" else _weight_bytes(folder)
    dtype = model_dtype(opts.dtype_requested, opts.dtype_default, opts.device, weight_bytes)
    size.dtype = dtype
    size.files = [ref.location] if ref.source == "single_file" else _variant_files(folder, _variant(folder, dtype))
    say(Progress("load", 0, 1, f"loading {ref.id} ({dtype} on {opts.device})"))
    if cancelled():
        raise JobCancelled()
    cls = str((index or {}).get("_class_name", ""))
    family = Family.of_pipeline(cls) or INPAINT_CLASSES.get(cls)  # a FLUX.1 Fill file: FLUX.1's transformer path
    if ref.source == "single_file" and family is not None and not family.single_files:
        raise EngineError(f"model {ref.id!r}: {family.label} single files are not served yet; serve its diffusers "
                          "folder or hub id", field="model", code=ErrorCode.MODEL_LOAD_FAILED)
    if ref.source == "single_file" and family is not None and family.flow:
        # SD3/Flux files people download hold the transformer; the rest comes from the config folder
        kwargs = {"text_encoder_3": None, "tokenizer_3": None} if not opts.sd3_t5 and "text_encoder_3" in index else {}
        pipe = flow.load_transformer_file(ref.location, config_dir, DTYPES[dtype], **kwargs)
    elif ref.source == "single_file":
        pipe = single_file.load_pipeline(ref.location, config_dir, DTYPES[dtype],
                                         single_file.scheduler_overrides(desc))
    else:
        kwargs = {**_skip_components(index), **qwen_edit.processor_kwargs(folder, index)}
        if not opts.sd3_t5 and index and "text_encoder_3" in index:
            kwargs.update(text_encoder_3=None, tokenizer_3=None)  # diffusers runs SD3 without T5
        variant = _variant(folder, dtype)
        if variant:
            kwargs["variant"] = variant
        kwargs[_DTYPE_KW] = DTYPES[dtype]
        pipe = DiffusionPipeline.from_pretrained(folder, **kwargs)
    flow.fill_config(pipe)
    check_supported({"_class_name": type(pipe).__name__}, ref.id)
    components = {k: ["x", type(v).__name__] if v is not None else [None, None] for k, v in pipe.components.items()}
    name = ref.id + " " + os.path.basename(str(ref.config or ""))
    denoiser = getattr(pipe, "unet", None) or pipe.transformer
    traits = detect(name, {"_class_name": type(pipe).__name__, **components}, dict(denoiser.config),
                    dict(pipe.vae.config), dict(pipe.scheduler.config))
    return pipe, dtype, traits


def _skip_components(index: dict | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if index and "safety_checker" in index:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    if index and "image_encoder" in index:
        kwargs["image_encoder"] = None
    return kwargs


def single_file_config(ref: ModelRef) -> tuple[str, Any]:
    """The local config folder for a single file: the user's (a folder, or a hub id's cached configs),
    else the one Easel ships for the file's architecture (then also the file's description)."""
    if ref.config is None:
        return single_file.shipped_config(ref.location, ref.id)
    if os.path.isdir(ref.config):
        return ref.config, None
    try:
        return hub.config_files(ref.config), None
    except EngineError as exc:
        raise EngineError(f"model {ref.id!r}: config {ref.config!r}: {exc}", field="model",
                          code=ErrorCode.MODEL_LOAD_FAILED) from None


def _weight_files(folder: str) -> list[str]:
    out = []
    for entry in os.scandir(folder):
        if entry.is_dir() and entry.name not in hub.SKIP_COMPONENTS:
            out += [os.path.join(entry.path, f) for f in os.listdir(entry.path) if f.endswith(hub.WEIGHT_EXTS)]
    return out


def _weight_bytes(folder: str) -> int:
    return sum(os.path.getsize(f) for f in _weight_files(folder))


def _variant_files(folder: str, variant: str | None) -> list[str]:
    """The weight files a load of ``variant`` reads: the ``.fp16`` ones, or the plain ones."""
    return [f for f in _weight_files(folder) if (".fp16" in os.path.basename(f)) == (variant == "fp16")]


def _variant(folder: str, dtype: str) -> str | None:
    """"fp16" when the folder only has fp16 weight files, or has them and we run in float16."""
    names = [os.path.basename(f) for f in _weight_files(folder)]
    fp16 = [n for n in names if ".fp16" in n]
    plain = [n for n in names if "." not in n.rsplit(".", 1)[0]]
    return "fp16" if fp16 and (dtype == "float16" or not plain) else None


def _place(pipe: Any, opts: LoadOptions) -> bool:
    """Move to the device and apply memory options; True when model CPU offload is on."""
    pipe.set_progress_bar_config(disable=True)
    offload = opts.offload_mode != "none" and opts.device != "cpu"
    if opts.offload_mode != "none" and not offload:
        log.info("cpu_offload ignored: the model already runs on the CPU")
    if offload and opts.offload_mode == "sequential":
        pipe.enable_sequential_cpu_offload(device=opts.device)  # hooks per module: shared by every mode's pipe
    elif offload:
        pipe.enable_model_cpu_offload(device=opts.device)
    else:
        pipe.to(opts.device)
    if opts.attention_slicing:
        pipe.enable_attention_slicing()  # replaces SDPA with sliced attention: only for very low memory
    if opts.vae_tiling:
        pipe.vae.enable_tiling()
    return offload
