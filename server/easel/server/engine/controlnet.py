"""ControlNet: control models the server offers, loaded on first use, and the pipelines that use them.

A job's control layers (``EngineJob.controls``, and the single ``control_model`` guide as one more layer)
each get a ControlNet: the one the layer names, else the server's first for its kind that fits the model
(``library.controls``: kinds from names, family from configs). Several layers combine as diffusers'
Multi-ControlNet; union models (xinsir's on SDXL, InstantX's and Shakker Labs' on FLUX.1) run each layer
with its ``control_mode``.

A control model is a hub id (``lllyasviel/control_v11p_sd15_scribble``), a single file (``control_file.py``:
A1111's and ComfyUI's ``.safetensors``/``.pth`` ControlNets, ids without the extension) or a local folder holding a
ControlNet of the model's family (``config.json`` + weights; ``Family.controlnet_class``); ids are the hub
id or the folder's name. A job's pipeline is the family's ControlNet pipeline for its mode
(``Family.pipeline_class``: ``StableDiffusion[XL]ControlNet{,Img2Img,Inpaint}Pipeline``,
``FluxControlNet{,Img2Img,Inpaint}Pipeline``, ``StableDiffusion3ControlNetPipeline`` for text to image only)
``.from_pipe(mode pipeline, controlnet=...)``: it shares every module of the loaded model, so nothing is
copied. Control models are kept in a small LRU (``max_loaded``), in the base model's dtype.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import diffusers
import numpy as np
import torch
from PIL import Image

from ...client.codes import ErrorCode
from ...client.protocol import CONTROL_KINDS, REFERENCE_KINDS
from ..families import LAYERS, Family
from ..library.controls import ControlInfo, download_hint, folder_info, name_info
from ..library.scan import Entry, Library
from .cache import LRUCache
from .control_file import describe_control_file, file_config, file_info, load_control_file
from .device import DTYPES, free_memory
from .loading import _DTYPE_KW, LoadedModel, LoadOptions
from .refs import _HUB_ID, _find
from .types import CancelledFn, EngineError, JobCancelled, Progress, ProgressFn

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ControlRef:
    ref: str  # as given
    id: str  # what clients send as ``control_model``
    source: str  # "hub" | "folder" | "file"
    location: str
    info: ControlInfo = ControlInfo(frozenset())
    config: str | None = None  # a single file's config folder (the one beside it, else a shipped one)


@dataclasses.dataclass
class ControlLayer:
    """One control layer of a job, ready to run: its loaded ControlNet and guide at work size."""

    id: str
    model: Any  # the family's ControlNet class (Family.controlnet_class)
    image: Any  # PIL RGB at the job's size, or a single-kind inpaint guide's tensor (``inpaint_guide``)
    strength: float
    start: float = 0.0
    end: float = 1.0
    mode: int | None = None  # a union model's control_mode


def parse_control_ref(text: str, models_dir: str | Sequence[str] | None = None) -> ControlRef:
    """A ControlNet reference named at start-up (so it may lie outside the models folders): a ControlNet
    file, a folder with a ControlNetModel config.json, or a hub id."""
    text = (text or "").strip()
    try:
        found = _find(text, models_dir, confine=False) if text else None
    except EngineError as exc:  # outside --models-dir
        raise EngineError(f"control model: {exc}", field="control_model") from None
    if found is not None and os.path.isfile(found):
        desc, config = describe_control_file(found)
        name = os.path.splitext(os.path.basename(found))[0]
        return ControlRef(text, name, "file", found, file_info(name, desc, config), config)
    if found is not None:
        if not os.path.isfile(os.path.join(found, "config.json")):
            raise EngineError(f"control model {text!r}: {found} is not a folder holding a ControlNet (config.json "
                              "and diffusion_pytorch_model.safetensors)", field="control_model")
        name = os.path.basename(os.path.normpath(found))
        return ControlRef(text, name, "folder", found, folder_info(name, found))
    if not _HUB_ID.match(text):
        raise EngineError(f"control model {text!r}: no such folder, and not a Hugging Face id like "
                          "'lllyasviel/control_v11p_sd15_scribble'", field="control_model")
    return ControlRef(text, text, "hub", text, name_info(text))


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
                                  field="control_model", code=ErrorCode.MODEL_LOAD_FAILED)
            self._lib_refs[name] = _entry_ref(name, entry)
            return name
        ids = self.ids()
        offer = f"this server offers: {', '.join(ids)}" if ids else \
            "this server offers none (start it with --control-model ID_OR_FOLDER)"
        raise EngineError(f"unknown control model {name!r}; {offer}", field="control_model",
                          code=ErrorCode.UNKNOWN_CONTROL_MODEL)

    def infos(self) -> dict[str, ControlInfo]:
        """What each usable control model serves, by id (named ones first)."""
        out = {i: ref.info for i, ref in self._refs.items()}
        for i, entry in self._found().items():
            if entry.problem is None:
                out[i] = _entry_ref(i, entry).info
        return out

    def kinds_for(self, family: Family, context: int | None) -> list[str]:
        """The control kinds a model of ``family`` can use here (the welcome's per-model ``controls``)."""
        kinds = set().union(*(info.kinds for info in self.infos().values() if info.fits(family, context)))
        return [k for k in CONTROL_KINDS if k in kinds]

    def choose(self, controls: Sequence[Any], family: Family, context: int | None) -> list[str | None]:
        """The control model of each layer: the one it names, else the first for its kind that fits (None:
        a reference layer, an IP-Adapter's: references.py)."""
        infos, out = self.infos(), []
        for i, control in enumerate(controls):
            if control.kind in REFERENCE_KINDS:
                out.append(None)
                continue
            if control.model is not None:
                try:
                    out.append(self.resolve(control.model))
                except EngineError as exc:
                    raise EngineError(str(exc), field=f"controls[{i}].model", code=exc.code) from None
                self._check_kind(i, control.kind, out[-1])
                continue
            found = next((cid for cid, info in infos.items() if control.kind in info.kinds
                          and info.fits(family, context)), None)
            if found is None:
                raise EngineError(f"control layer {i + 1} ({control.kind}): this server has no {control.kind} "
                                  f"ControlNet for {family.label} models; {download_hint(control.kind, family)}",
                                  field=f"controls[{i}].kind", code=ErrorCode.NO_CONTROL_MODEL)
            out.append(self.resolve(found))  # a models-folder one is resolved now: union_mode reads its ref
        return out

    def _check_kind(self, i: int, kind: str, control_id: str) -> None:
        """A union model runs a layer only with a kind it has a ``control_mode`` for."""
        info = self._ref(control_id).info
        if info.union and kind not in info.kinds:
            raise EngineError(f"control layer {i + 1} ({kind}): control model {control_id!r} is a ControlNet Union "
                              f"that serves {', '.join(k for k in CONTROL_KINDS if k in info.kinds)}, not {kind}; "
                              "name another model or none", field=f"controls[{i}].kind",
                              code=ErrorCode.NO_CONTROL_MODEL)

    def _ref(self, control_id: str) -> ControlRef:
        return self._refs.get(control_id) or self._lib_refs[control_id]

    def union_mode(self, control_id: str, kind: str | None) -> int | None:
        """A union model's ``control_mode`` for ``kind`` (None: the legacy sketch guide); None: a single-kind one."""
        return self._ref(control_id).info.mode(kind)

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
            model = self._load(self._ref(control_id), dtype, progress)
            self._cache.put(key, model)
            return model

    def _load(self, ref: ControlRef, dtype: str, progress: ProgressFn) -> Any:
        progress(Progress("load", 0, 1, f"loading control model {ref.id}"))
        try:
            cls = getattr(diffusers, (ref.info.family or Family.SDXL).controlnet_class(ref.info.union))
            model = load_control_file(ref.location, ref.config, DTYPES[dtype]) if ref.source == "file" else \
                cls.from_pretrained(ref.location, **{_DTYPE_KW: DTYPES[dtype]})
            model.to(self._options.device)
        except Exception as exc:
            hint = {"hub": "run `hf download " + ref.id + "` while online",
                    "file": f"check that the file is complete and fits the config in {ref.config}"}.get(
                ref.source, "check that the folder holds a complete ControlNet")
            raise EngineError(f"could not load control model {ref.id!r} from {ref.location}: {type(exc).__name__}: "
                              f"{str(exc)[:300]}; {hint}", field="control_model", code=ErrorCode.MODEL_LOAD_FAILED) from None
        model.requires_grad_(False)
        progress(Progress("load", 1, 1, f"loaded control model {ref.id}"))
        log.info("loaded control model %s (%s)", ref.id, dtype)
        return model

    def close(self) -> None:
        with self._lock:
            self._cache.pop_all()


#: the config entries a ControlNet shares with the UNet or transformer it steers
_UNET_FIT = ("cross_attention_dim", "addition_embed_type")
_TRANSFORMER_FIT = ("joint_attention_dim", "pooled_projection_dim", "num_attention_heads", "attention_head_dim")


def _entry_ref(name: str, entry: Entry) -> ControlRef:
    """A usable models-folder ControlNet: a diffusers folder or a single file (with its config folder)."""
    if entry.folder:
        return ControlRef(entry.path, name, "folder", entry.path, folder_info(name, entry.path))
    config = file_config(entry.desc, entry.config)
    return ControlRef(entry.path, name, "file", entry.path, file_info(name, entry.desc, config), config)


def check_fits(controlnet: Any, lm: LoadedModel, control_id: str) -> None:
    """EngineError (field control_model) when the ControlNet was made for another model family (or size)."""
    fam = lm.traits.family
    denoiser = (lm.base.transformer if fam.flow else lm.base.unet).config
    mismatch = [name for name in (_TRANSFORMER_FIT if fam.flow else _UNET_FIT)
                if _norm(getattr(controlnet.config, name, None)) != _norm(getattr(denoiser, name, None))]
    if type(controlnet).__name__ not in (fam.controlnet_class(False), fam.controlnet_class(True)):
        mismatch.insert(0, "classes")
    if mismatch:
        family = fam.pipeline_label
        raise EngineError(f"control model {control_id!r} does not fit model {lm.ref.id!r} ({family}): their "
                          f"{', '.join(mismatch)} differ; use a ControlNet made for {family}", field="control_model",
                          code=ErrorCode.CONTROL_MODEL_MISMATCH)


def _norm(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def control_pipeline(lm: LoadedModel, mode: str, layers: Sequence[ControlLayer]) -> Any:
    """The ControlNet twin of ``lm``'s pipeline for ``mode``, sharing all of its modules: one ControlNet, or
    a list (Multi-ControlNet); SDXL's union models (all of the layers' or none) take its Union pipeline,
    FLUX.1's mix with single-kind ones in its one pipeline."""
    family = lm.traits.family
    if lm.traits.inpaint_unet:
        mode = "inpaint"
    union = [layer.mode is not None for layer in layers]
    own_class = family.controlnet_class(True) != family.controlnet_class(False)  # SDXL's ControlNetUnionModel
    if own_class and any(union) and not all(union):
        raise EngineError("a job's control layers cannot mix a ControlNet Union with single-kind ControlNets; "
                          "name the same kind of model in every layer's 'model' (or none)", field="controls")
    if len({getattr(layer.model, "input_hint_block", None) is None for layer in layers}) > 1:
        raise EngineError("a job's control layers cannot mix XLabs FLUX.1 ControlNets with InstantX-style ones "
                          "(diffusers runs them differently); name ControlNets of one maker in every layer's "
                          "'model'", field="controls")
    cls = getattr(diffusers, family.pipeline_class(mode, control=LAYERS, union=all(union)))
    nets = [layer.model for layer in layers]
    pipe = cls.from_pipe(lm.base, controlnet=nets[0] if len(nets) == 1 else nets, **{_DTYPE_KW: lm.base.dtype})
    pipe.set_progress_bar_config(disable=True)
    for controlnet in nets:
        if lm.channels_last:  # the shared UNet and VAE already are
            controlnet.to(memory_format=torch.channels_last)
        if lm.offload_mode == "sequential":  # the base modules keep their per-module hooks
            controlnet.to(lm.offload_device)
    if lm.offload_mode != "sequential" and lm.offload_device is not None:
        pipe.enable_model_cpu_offload(device=lm.offload_device)
        lm._offload_owner = pipe  # the next plain pipeline re-hooks the shared modules
    return pipe


def control_kwargs(accepted: Any, layers: Sequence[ControlLayer]) -> dict[str, Any]:
    """Call arguments: the control images (``image`` for SD text to image, else ``control_image``), scales and
    step ranges: plain values for one ControlNet, lists for several; union models add ``control_mode``: a
    list, and the images too, for SDXL's union pipelines; FLUX.1 takes one ControlNet's as an int, and a
    Multi-ControlNet's as a list with None for its single-kind layers (its img2img and inpaint pipelines
    need that list even without a union model)."""
    key = "control_image" if "control_image" in accepted else "image"
    one = len(layers) == 1
    images = [layer.image if isinstance(layer.image, torch.Tensor) else layer.image.convert("RGB") for layer in layers]
    out: dict[str, Any] = {key: images[0] if one else images}
    for arg, values in (("controlnet_conditioning_scale", [layer.strength for layer in layers]),
                        ("control_guidance_start", [layer.start for layer in layers]),
                        ("control_guidance_end", [layer.end for layer in layers])):
        out[arg] = float(values[0]) if one else [float(v) for v in values]
    modes = [layer.mode for layer in layers]
    if isinstance(layers[0].model, diffusers.ControlNetUnionModel):
        out[key] = images
        out["control_mode"] = modes
    elif one and modes[0] is not None:
        out["control_mode"] = modes[0]
    elif not one and "control_mode" in accepted:
        out["control_mode"] = modes
    return out


def inpaint_guide(image: Image.Image, mask: Image.Image, union: bool) -> Any:
    """An ``inpaint`` layer's guide: its image with the pixels to repaint (the mask above half) marked as the
    ControlNet was trained: black for a union's repaint mode (xinsir's promax), else -1 (lllyasviel's
    control_v11p_sd15_inpaint; diffusers' ``make_inpaint_condition``): a 1x3xHxW float tensor, [0, 1] elsewhere,
    that the pipelines' control-image processor (``do_normalize=False``) passes on unchanged."""
    masked = np.asarray(mask.convert("L"), np.float32) / 255.0 > 0.5
    if union:
        pixels = np.array(image.convert("RGB"))
        pixels[masked] = 0
        return Image.fromarray(pixels, "RGB")
    guide = np.asarray(image.convert("RGB"), np.float32) / 255.0
    guide[masked] = -1.0
    return torch.from_numpy(guide.transpose(2, 0, 1)[None].copy())


def samples_globally(layers: Sequence[ControlLayer]) -> bool:
    """Whether the pipeline samples the control images' VAE latents from torch's global generator (diffusers'
    SD 3 ControlNet pipeline does): such a job runs inside ``control_rng``."""
    return any(isinstance(layer.model, diffusers.SD3ControlNetModel) for layer in layers)


def per_seed(layers: Sequence[ControlLayer], mode: str) -> bool:
    """Whether the job's images need one call each: where ``samples_globally`` (else a batch's images would
    not equal single runs), and for union models beyond text to image (diffusers' FLUX.1 img2img and
    inpaint ControlNet pipelines give the union's mode one batch row, which fails for several images)."""
    union = mode != "txt2img" and any(layer.mode is not None for layer in layers)
    return union or samples_globally(layers)


@contextlib.contextmanager
def control_rng(layers: Sequence[ControlLayer], seed: int) -> Iterator[None]:
    """Torch's global generators seeded with ``seed`` for the call (and restored after it) where
    ``samples_globally``: the same seed gives the same picture; a no-op otherwise."""
    if not samples_globally(layers):
        yield
        return
    cuda = range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield
