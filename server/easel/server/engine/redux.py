"""Reference images on FLUX.1: FLUX Redux (``black-forest-labs/FLUX.1-Redux-dev``), kinds ``reference`` and ``style``.

FLUX Redux is diffusers' ``FluxPriorReduxPipeline``: a SigLIP image encoder (``image_encoder``,
``feature_extractor``) and ``image_embedder`` (ReduxImageEncoder) that turns a picture into tokens in the
T5 text space. FLUX.1 reads them beside the prompt's: the job's prompt is encoded by the model's own
pipeline (``encode_prompt``: T5 tokens and CLIP's pooled vector), and each reference layer's image tokens
are appended after them (several layers: one block each, in order; the pooled vector stays the prompt's).
At strength 1 that is diffusers' prior pipeline called with the prompt and the base model's text encoders.
The ``strength`` is an attention bias, ``log(strength)`` added to every attention's scores for the layer's
tokens (ComfyUI's Apply Style Model, "attn_bias"; through ``joint_attention_kwargs``' ``attention_mask``):
at 0.5 the picture's tokens get half the attention they would get at 1, against the prompt and the image.
Scaling the tokens instead (the prior's ``prompt_embeds_scale``) hardly changes anything, since FLUX.1
normalizes its attention keys. The pipeline then runs on ``prompt_embeds``/``pooled_prompt_embeds`` (text
to image, image to image, inpainting and their ControlNet pipelines all take them); nothing of the model
changes, so jobs without references keep their pixels.

A ``style`` layer keeps the picture's look and drops most of its content: its tokens (one per SigLIP patch,
27x27 for FLUX.1-Redux-dev) are averaged over 3x3 patches (``STYLE_POOL``: 729 -> 81 tokens; ComfyUI's
"Redux Advanced" downsampling), so colours, textures and the overall look carry while objects and their
places blur away. Redux has no layout or face split: ``composition`` and ``face`` are refused on FLUX.1.

Redux folders (a diffusers ``FluxPriorReduxPipeline`` folder: ``model_index.json`` + ``image_encoder/``,
``feature_extractor/``, ``image_embedder/``) are found in ``--ip-adapter`` references (the folder, a
folder holding it, or the cached hub id) and in the models folders' ``style_models/`` and ``redux/``
(ComfyUI's folder for its Redux file), and as ComfyUI's two single files (redux_files.py). The encoder and
embedder are loaded once and kept.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ...client.codes import ErrorCode
from ...client.protocol import REFERENCE_KINDS
from ..families import Family
from ..library.controls import REDUX_DOWNLOADS
from ..library.layouts import kind_folders
from . import redux_files
from .device import DTYPES
from .edit_images import layer_image
from .types import EngineError

log = logging.getLogger(__name__)
FAMILY = Family.FLUX
KINDS = tuple(REDUX_DOWNLOADS[FAMILY])  # ("reference", "style")
STYLE_POOL = 3  # a style layer's tokens: averaged over STYLE_POOL x STYLE_POOL patches
REDUX_FOLDERS = ("style_models", "redux")
ENCODER_FOLDERS = ("clip_vision",)  # ComfyUI's SigLIP file for its Redux file
Found = str | tuple[str, str]  # a diffusers folder, or (embedder file, encoder file)
_CLASS = "FluxPriorReduxPipeline"


@dataclass
class ReduxLayer:
    """One reference layer of a FLUX.1 job: the loaded prior pipeline, its picture and strength."""

    prior: Any  # FluxPriorReduxPipeline (image encoder, feature extractor, embedder)
    image: Any  # PIL RGB, any size
    strength: float
    kind: str = "reference"


def is_redux_folder(folder: str) -> bool:
    """A diffusers ``FluxPriorReduxPipeline`` folder."""
    try:
        with open(os.path.join(folder, "model_index.json"), encoding="utf-8") as f:
            return json.load(f).get("_class_name") == _CLASS
    except (OSError, ValueError, AttributeError):
        return False


def _search(folder: str, out: list[Found], depth: int = 0) -> None:
    if is_redux_folder(folder):
        out.append(folder)
        return
    if depth >= 2:
        return
    try:
        names = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return
    for name in names:
        _search(os.path.join(folder, name), out, depth + 1)


def download_hint() -> str:
    """What to download for a FLUX.1 reference layer, in words."""
    repo = REDUX_DOWNLOADS[FAMILY]["reference"]
    return (f"download FLUX Redux while online (a gated repository: accept its license on Hugging Face first): "
            f"`hf download {repo}`, and start the server with --ip-adapter {repo} (or put the folder in the models "
            "folder's style_models/)")


class Redux:
    """The FLUX Redux folders a server offers; ``layers`` makes a FLUX.1 job's reference layers."""

    def __init__(self, sources: Sequence[str], roots: Sequence[str], device: str):
        self._sources = list(sources)
        self._roots = list(roots)
        self._device = device
        self._prior: tuple[str, Any] | None = None  # (path|dtype, the loaded prior pipeline)
        self._lock = threading.Lock()

    def found(self) -> list[Found]:
        """The Redux models on disk now: folders (``--ip-adapter`` ones first), then single-file pairs."""
        out: list[Found] = []
        for source in self._sources:
            if os.path.isdir(source):
                _search(source, out)
        styles = kind_folders(self._roots, REDUX_FOLDERS)
        for folder in styles:
            _search(folder, out, 1)
        return out + redux_files.pairs(styles, kind_folders(self._roots, ENCODER_FOLDERS))

    def kinds(self) -> list[str]:
        """The reference kinds FLUX.1 models can use here (the welcome's per-model ``controls``)."""
        return list(KINDS) if self.found() else []

    def choose(self, controls: Sequence[Any]) -> Found | None:
        """The Redux model for the job's reference layers (None: it has none); EngineError naming
        ``controls[i].kind`` for a kind Redux has not, or when no Redux is installed."""
        used = [(i, c) for i, c in enumerate(controls) if c.kind in REFERENCE_KINDS]
        for i, control in used:
            if control.kind not in KINDS:
                raise EngineError(f"reference layer {i + 1} ({control.kind}): FLUX.1 takes references through FLUX "
                                  "Redux, which steers with the whole picture or its style; use kind reference or "
                                  "style",
                                  field=f"controls[{i}].kind", code=ErrorCode.UNSUPPORTED_FEATURE)
        if not used:
            return None
        found = self.found()
        if not found:
            i, control = used[0]
            raise EngineError(f"reference layer {i + 1} ({control.kind}): this server has no FLUX Redux model for "
                              f"{FAMILY.label} models; {download_hint()}", field=f"controls[{i}].kind",
                              code=ErrorCode.NO_CONTROL_MODEL)
        return found[0]

    def layers(self, controls: Sequence[Any], attached: dict[str, Any], dtype: str) -> list[ReduxLayer]:
        """The job's reference layers that steer (strength above 0), the prior pipeline loaded."""
        folder = self.choose(controls)
        out = []
        for i, control in enumerate(controls):
            if control.kind not in REFERENCE_KINDS:
                continue
            image = layer_image(i, control, attached)
            if control.strength > 0 and folder is not None:
                out.append(ReduxLayer(self._load(folder, dtype), image.convert("RGB"), control.strength,
                                      control.kind))
        return out

    def _load(self, folder: Found, dtype: str) -> Any:
        key = f"{folder}|{dtype}"
        with self._lock:
            if self._prior is None or self._prior[0] != key:
                self._prior = None
                from diffusers import FluxPriorReduxPipeline

                try:
                    prior = (redux_files.load_prior(*folder, DTYPES[dtype]) if isinstance(folder, tuple) else
                             FluxPriorReduxPipeline.from_pretrained(folder, dtype=DTYPES[dtype]))
                except Exception as exc:
                    where = " + ".join(folder) if isinstance(folder, tuple) else folder
                    raise EngineError(f"could not load FLUX Redux {where}: {type(exc).__name__}: {str(exc)[:300]}",
                                      field="controls", code=ErrorCode.MODEL_LOAD_FAILED) from None
                prior.to(self._device)
                prior.set_progress_bar_config(disable=True)
                self._prior = (key, prior)
                log.info("loaded FLUX Redux %s (%s)", folder, dtype)
            return self._prior[1]

    def close(self) -> None:
        with self._lock:
            self._prior = None


@torch.no_grad()
def image_tokens(layer: ReduxLayer) -> torch.Tensor:
    """(1, tokens, width): the layer's picture as FLUX Redux tokens."""
    prior = layer.prior
    tokens = prior.image_embedder(prior.encode_image(layer.image, prior.image_encoder.device, 1)).image_embeds
    return pooled(tokens) if layer.kind == "style" else tokens


def pooled(tokens: torch.Tensor, factor: int = STYLE_POOL) -> torch.Tensor:
    """(1, n, width) tokens of a square patch grid averaged over ``factor`` x ``factor`` patches (a side that
    does not divide: adaptive pooling; at least one token); ValueError when ``n`` is no square."""
    side = math.isqrt(tokens.shape[1])
    if side * side != tokens.shape[1]:
        raise ValueError(f"FLUX Redux gave {tokens.shape[1]} image tokens, not a square grid")
    grid = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)
    grid = torch.nn.functional.adaptive_avg_pool2d(grid, max(1, side // factor))
    return grid.flatten(2).transpose(1, 2)


def attention_bias(text: int, blocks: Sequence[tuple[int, float]], latents: int) -> torch.Tensor | None:
    """The (1, 1, 1, keys) scores added to FLUX.1's joint attention (keys: the ``text`` tokens, each block of
    (tokens, strength), then the picture's ``latents``): ``log(strength)`` on a block; None when all are 1."""
    if all(strength == 1 for _, strength in blocks):
        return None
    bias = [torch.zeros(text)] + [torch.full((n,), math.log(s)) for n, s in blocks] + [torch.zeros(latents)]
    return torch.cat(bias)[None, None, None]


@torch.no_grad()
def prompt_kwargs(pipe: Any, kwargs: dict[str, Any], layers: Sequence[ReduxLayer]) -> dict[str, Any]:
    """Call arguments replacing the prompt: its embeddings (one row per image) with the layers' image tokens
    appended, their strengths as an attention bias; ``num_images_per_prompt`` 1 since the rows are the batch."""
    count = int(kwargs.get("num_images_per_prompt") or 1)
    embeds, pooled, _ = pipe.encode_prompt(prompt=kwargs["prompt"], prompt_2=None, device=pipe._execution_device,
                                           num_images_per_prompt=count)
    tokens = [image_tokens(layer).to(device=embeds.device, dtype=embeds.dtype) for layer in layers]
    out = {"prompt": None, "prompt_embeds": torch.cat([embeds, *(t.expand(count, -1, -1) for t in tokens)], dim=1),
           "pooled_prompt_embeds": pooled, "num_images_per_prompt": 1}
    side = int(pipe.vae_scale_factor) * 2  # packed latents: one token per 2x2 latent pixels
    bias = attention_bias(embeds.shape[1], [(t.shape[1], layer.strength) for t, layer in zip(tokens, layers)],
                          (kwargs["height"] // side) * (kwargs["width"] // side))
    if bias is not None:
        out["joint_attention_kwargs"] = {"attention_mask": bias.to(device=embeds.device, dtype=embeds.dtype)}
    return out
