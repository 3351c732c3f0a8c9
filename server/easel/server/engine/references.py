"""Reference images (IP-Adapter): the control layers of ``REFERENCE_KINDS`` on SD 1.x and SDXL models.

A reference layer's picture goes through a CLIP image encoder into an IP-Adapter, diffusers'
``load_ip_adapter``/``set_ip_adapter_scale``/``ip_adapter_image``. Kinds: ``reference`` (content and look:
every block at the layer's strength), ``style`` and ``composition`` (InstantStyle: only the UNet's first
up block with attentions, its second attention, for the style; only the last down block with attentions,
its second attention, for the layout: SDXL's ``up_blocks.0.attentions.1`` and ``down_blocks.2.attentions.1``,
SD 1.5's ``up_blocks.1`` and ``down_blocks.2``) and ``face`` (the IP-Adapter face models that need only the
image encoder: names with ``face``; FaceID models need insightface and are left out).

Adapters (``.safetensors`` with ``image_proj.``/``ip_adapter.`` keys) and image encoders (folders with a
``CLIPVisionModelWithProjection`` config, or single files with transformers' key names) are found in the models folders' ``ipadapter``/``ip-adapter``
and ``clip_vision`` folders (ComfyUI) and in the folders, files or cached hub ids of ``--ip-adapter``
(h94/IP-Adapter's layout: ``models/``, ``sdxl_models/``, each with its ``image_encoder/``). An adapter fits
a model of the same cross-attention width, and an encoder whose width it reads. Each job loads its adapters
into the pipeline it runs (several at once: one per layer, each scaled on its own) and takes them out
afterwards, restoring the UNet's attention processors, so a job without references keeps its pixels. The
encoder is loaded once and shared by every pipeline; adapters' weights are kept read (a small LRU).
FLUX.1 models take their reference layers through FLUX Redux instead (redux.py), FLUX.2 Klein as more pictures
(edit_images.py).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from ...client.codes import ErrorCode
from ...client.protocol import MAX_CONTROLS, REFERENCE_KINDS
from ..families import REFERENCES, Family
from ..library.controls import IP_ADAPTER_DOWNLOADS, IP_ADAPTER_ENCODER, IP_ADAPTER_REPO
from ..library.layouts import kind_folders
from . import edit_images
from .cache import LRUCache
from .device import DTYPES
from .redux import FAMILY as REDUX_FAMILY
from .redux import Redux, ReduxLayer, prompt_kwargs
from .reference_files import (
    ADAPTER_FOLDERS,
    ENCODER_FOLDERS,
    Adapter,
    Encoder,
    encoder_info,
    file_info,
    load_encoder,
    parse_ip_adapter_ref,
    walk,
)
from .types import EngineError

log = logging.getLogger(__name__)


@dataclass
class ReferenceLayer:
    """One reference layer of a job, ready to run."""

    kind: str
    adapter: Adapter
    encoder: Any  # the loaded CLIPVisionModelWithProjection
    state: dict  # the adapter's weights as load_ip_adapter takes them
    image: Any  # PIL RGB, any size
    strength: float
    mask: Any = None  # PIL at the job's size (white = it acts there), None: everywhere


def scale_for(kind: str, strength: float, unet: Any) -> float | dict:
    """``set_ip_adapter_scale``'s value for one layer: its strength everywhere, or InstantStyle's one block."""
    if kind not in ("style", "composition"):
        return float(strength)
    side = "up" if kind == "style" else "down"
    blocks = [i for i, block in enumerate(getattr(unet, f"{side}_blocks")) if hasattr(block, "attentions")]
    count = unet.config.layers_per_block + (side == "up")
    values = [0.0] * count
    values[min(1, count - 1)] = float(strength)
    return {side: {f"block_{blocks[0] if side == 'up' else blocks[-1]}": values}}


class References:
    """The IP-Adapters and image encoders a server offers; ``layers`` makes a job's reference layers."""

    def __init__(self, refs: Sequence[str | os.PathLike], roots: Sequence[str], device: str):
        self._sources = [parse_ip_adapter_ref(os.fspath(r)) for r in refs]
        self._roots = list(roots)
        self._device = device
        self._encoders: LRUCache[Any] = LRUCache(1)
        self._states: LRUCache[dict] = LRUCache(MAX_CONTROLS)
        self._lock = threading.Lock()
        self._redux = Redux(self._sources, roots, device)

    def found(self) -> tuple[list[Adapter], list[Encoder]]:
        """The adapters and encoders on disk now (``--ip-adapter`` ones first)."""
        adapters: list[Adapter] = []
        encoders: list[Encoder] = []
        for source in self._sources:
            if os.path.isdir(source):
                encoder = encoder_info(source)
                if encoder is not None:
                    encoders.append(encoder)
                else:
                    walk(source, adapters, encoders)
            elif isinstance(found := file_info(source), Adapter):
                adapters.append(found)
        for folder in kind_folders(self._roots, ADAPTER_FOLDERS + ENCODER_FOLDERS):
            walk(folder, adapters, encoders)
        return adapters, encoders

    def _usable(self, family: Family, context: int | None) -> list[tuple[Adapter, Encoder]]:
        """Adapters that fit the model, each with its encoder (the nearest one that reads for it); plus
        models (hidden states) first."""
        if not family.fits_control(REFERENCES) or context is None:
            return []
        adapters, encoders = self.found()
        out = []
        for adapter in sorted(adapters, key=lambda a: (not a.hidden, a.path)):
            fitting = [e for e in encoders if e.reads_for(adapter)]
            if adapter.context == context and fitting:
                near = os.path.dirname(adapter.path)
                out.append((adapter, max(fitting, key=lambda e: len(os.path.commonpath([near, e.path])))))
        return out

    def kinds_for(self, family: Family, context: int | None) -> list[str]:
        """The reference kinds a model of ``family`` can use here (for the welcome's per-model ``controls``)."""
        if family == REDUX_FAMILY:
            return self._redux.kinds()
        if family.edit_images:
            return list(edit_images.KINDS)
        kinds = set().union(*(a.kinds for a, _ in self._usable(family, context)))
        return [k for k in REFERENCE_KINDS if k in kinds]

    def choose(self, controls: Sequence[Any], family: Family, context: int | None,
               model_id: str = "") -> dict[int, tuple[Adapter, Encoder]]:
        """The adapter and encoder of each reference layer (by its index in ``controls``); EngineError naming
        ``controls[i].kind`` where none fits (FLUX.1: checks its Redux layers, returns nothing)."""
        if family == REDUX_FAMILY or family.edit_images:
            masked = next((i for i, c in enumerate(controls) if c.kind in REFERENCE_KINDS and c.mask), None)
            if masked is not None:
                raise EngineError(f"reference layer {masked + 1}: {family.label} reads its references over the whole "
                                  "picture; a mask limits IP-Adapter references (SD 1.x, SDXL): leave 'mask' out",
                                  field=f"controls[{masked}].mask", code=ErrorCode.UNSUPPORTED_FEATURE)
        if family == REDUX_FAMILY:
            self._redux.choose(controls)
            return {}
        if family.edit_images:
            edit_images.choose(controls, family.label)
            return {}
        usable, out = self._usable(family, context), {}
        for i, control in enumerate(controls):
            if control.kind not in REFERENCE_KINDS:
                continue
            field = f"controls[{i}].kind"
            if not family.fits_control(REFERENCES):
                raise EngineError(f"model {model_id!r} ({family}) cannot use reference layer {i + 1} "
                                  f"({control.kind}): {family.unsupported(REFERENCES)}", field=field,
                                  code=ErrorCode.UNSUPPORTED_FEATURE)
            found = next((pair for pair in usable if control.kind in pair[0].kinds), None)
            if found is None:
                raise EngineError(f"reference layer {i + 1} ({control.kind}): this server has no {control.kind} "
                                  f"IP-Adapter (with its image encoder) for {family.label} models; "
                                  f"{download_hint(control.kind, family)}", field=field, code=ErrorCode.NO_CONTROL_MODEL)
            out[i] = found
        encoders = {encoder.path for _, encoder in out.values()}
        if len(encoders) > 1:
            raise EngineError("a job's reference layers need IP-Adapters that read the same image encoder; use "
                              "one kind of adapter (e.g. all ViT-H ones)", field="controls")
        return out

    def layers(self, controls: Sequence[Any], attached: dict[str, Any], family: Family, context: int | None,
               dtype: str) -> list[ReferenceLayer] | list[ReduxLayer] | list[edit_images.EditImage]:
        """The job's reference layers that steer (strength above 0), their weights and encoder loaded."""
        if family == REDUX_FAMILY:
            return self._redux.layers(controls, attached, dtype)
        if family.edit_images:
            return edit_images.layers(controls, attached, family.label)
        out = []
        for i, (adapter, encoder) in self.choose(controls, family, context).items():
            control = controls[i]
            image = edit_images.layer_image(i, control, attached)
            if control.strength > 0:
                mask = attached.get(control.mask) if control.mask else None
                if control.mask and mask is None:
                    raise EngineError(f"reference layer {i + 1} names the mask {control.mask!r}, which was not sent",
                                      field=f"controls[{i}].mask")
                out.append(ReferenceLayer(control.kind, adapter, self._encoder(encoder, dtype), self._state(adapter),
                                          image.convert("RGB"), control.strength, mask))
        return out

    def _encoder(self, encoder: Encoder, dtype: str) -> Any:
        key = f"{encoder.path}|{dtype}"
        with self._lock:
            model = self._encoders.get(key)
            if model is None:
                for _ in self._encoders.make_room():
                    pass
                try:
                    model = load_encoder(encoder.path, DTYPES[dtype])
                except Exception as exc:
                    raise EngineError(f"could not load the image encoder {encoder.path}: {type(exc).__name__}: "
                                      f"{str(exc)[:300]}", field="controls", code=ErrorCode.MODEL_LOAD_FAILED) from None
                model.to(self._device).requires_grad_(False)
                self._encoders.put(key, model)
                log.info("loaded image encoder %s (%s)", encoder.path, dtype)
            return model

    def _state(self, adapter: Adapter) -> dict:
        from safetensors.torch import load_file

        with self._lock:
            state = self._states.get(adapter.path)
            if state is None:
                for _ in self._states.make_room():
                    pass
                flat = load_file(adapter.path)
                state = {part: {k[len(part) + 1:]: v for k, v in flat.items() if k.startswith(part + ".")}
                         for part in ("image_proj", "ip_adapter")}
                self._states.put(adapter.path, state)
            return state

    def close(self) -> None:
        with self._lock:
            self._encoders.pop_all()
            self._states.pop_all()
        self._redux.close()


def download_hint(kind: str, family: Family) -> str:
    """What to download for a ``kind`` reference layer on ``family``'s models, in words."""
    file = IP_ADAPTER_DOWNLOADS.get(family, {}).get(kind)
    if file is None:
        return f"Easel knows no {kind} IP-Adapter for {family.label}; use another model"
    return (f"download it while online: `hf download {IP_ADAPTER_REPO} {file} {' '.join(IP_ADAPTER_ENCODER)}`, and "
            f"start the server with --ip-adapter {IP_ADAPTER_REPO} (or put the file in the models folder's ipadapter/ and the "
            "image encoder folder in its clip_vision/)")


def attach(pipe: Any, layers: Sequence[ReferenceLayer | ReduxLayer]) -> tuple | None:
    """Load the layers' adapters into ``pipe`` (its UNet is shared with the model's other pipelines) with
    their scales; returns what ``detach`` restores (None: no layers or Redux ones, nothing changed)."""
    if not layers or isinstance(layers[0], (ReduxLayer, edit_images.EditImage)):
        return None
    unet = pipe.unet
    saved = (dict(unet.attn_processors), unet.encoder_hid_proj, unet.config.encoder_hid_dim_type,
             getattr(pipe, "image_encoder", None), getattr(pipe, "feature_extractor", None))
    try:
        # diffusers rebuilds the self-attention processors from their classes, which a sliced one (attention
        # slicing) cannot be made from; its IP-Adapter processors do not slice anyway
        unet.set_attn_processor({name: AttnProcessor2_0() if getattr(proc, "slice_size", None) else proc
                                 for name, proc in saved[0].items()})
        pipe.register_modules(image_encoder=layers[0].encoder)
        pipe.load_ip_adapter([layer.state for layer in layers], subfolder=[""] * len(layers),
                             weight_name=[layer.adapter.name for layer in layers], image_encoder_folder=None)
        pipe.set_ip_adapter_scale([scale_for(layer.kind, layer.strength, unet) for layer in layers])
    except Exception:
        detach(pipe, saved)
        raise
    return saved


def detach(pipe: Any, saved: tuple | None) -> None:
    """Take the adapters out again: the UNet's own attention processors and projection, the pipeline's own
    encoder and feature extractor."""
    if saved is None:
        return
    procs, hid_proj, hid_type, encoder, extractor = saved
    unet = pipe.unet
    unet.set_attn_processor(procs)
    unet.encoder_hid_proj = hid_proj
    unet.config.encoder_hid_dim_type = hid_type
    pipe.register_modules(image_encoder=encoder, feature_extractor=extractor)


def reference_kwargs(layers: Sequence[Any], pipe: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Call arguments: one reference image per adapter, and the masks of those that have one (diffusers'
    ``ip_adapter_masks``); Redux layers: the prompt's embeddings with their tokens."""
    if isinstance(layers[0], ReduxLayer):
        return prompt_kwargs(pipe, kwargs, layers)
    if isinstance(layers[0], edit_images.EditImage):
        return edit_images.call_kwargs(layers, kwargs)
    out: dict[str, Any] = {"ip_adapter_image": [layer.image for layer in layers]}
    if any(layer.mask is not None for layer in layers):
        size = (kwargs["width"], kwargs["height"])
        out["cross_attention_kwargs"] = {"ip_adapter_masks": [None if layer.mask is None else
                                                              mask_tensor(layer.mask, size) for layer in layers]}
    return out


def mask_tensor(mask: Any, size: tuple[int, int]) -> torch.Tensor:
    """(1, 1, height, width) weights in 0..1 from a mask picture (RGB over black: gray values weight), soft
    values kept (diffusers' IPAdapterMaskProcessor would binarize them); EngineError for another size."""
    if mask.size != size:
        raise EngineError(f"a reference mask is {mask.width}x{mask.height} but the job is {size[0]}x{size[1]}",
                          field="controls")
    return torch.from_numpy(np.asarray(mask.convert("L"), dtype=np.float32) / 255.0)[None, None]
