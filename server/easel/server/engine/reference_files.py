"""Finding IP-Adapters and CLIP image encoders (references.py uses them): files and folders, by their headers.

Adapters are ``.safetensors`` with ``image_proj.``/``ip_adapter.`` keys (FaceID ones, which need insightface, are
skipped); encoders are folders with a ``CLIPVisionModelWithProjection`` config or single files with transformers'
key names (ComfyUI's ``clip_vision``). ``--ip-adapter`` names a folder, a file or a cached hub id.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from ...client.protocol import REFERENCE_KINDS
from ..library.controls import IP_ADAPTER_REPO
from .refs import _HUB_ID
from .types import EngineError

ADAPTER_FOLDERS = ("ipadapter", "ip-adapter", "ip_adapter", "ipadapters")
ENCODER_FOLDERS = ("clip_vision", "image_encoder")
_MAX_DEPTH = 3


@dataclass(frozen=True)
class Adapter:
    """One IP-Adapter file: the cross-attention width it fits, the image features it reads."""

    path: str
    context: int  # the UNet's cross-attention width
    embed: int  # the width of the encoder output it reads
    hidden: bool  # reads the encoder's hidden states (plus, full face), else its image embeds
    kinds: frozenset[str]

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


@dataclass(frozen=True)
class Encoder:
    """One CLIP image encoder folder: its hidden and projection widths."""

    path: str
    hidden: int
    projection: int

    def reads_for(self, adapter: Adapter) -> bool:
        return (self.hidden if adapter.hidden else self.projection) == adapter.embed


_SEEN: dict[tuple[str, int, int], Adapter | Encoder | None] = {}  # file_info by path, size, mtime


def file_info(path: str) -> Adapter | Encoder | None:
    """What a ``.safetensors`` file is, from its header: an IP-Adapter, a single-file CLIP image encoder
    (transformers' key names, as ComfyUI's ``clip_vision`` files), else None (FaceID adapters too)."""
    from safetensors import safe_open

    name = os.path.basename(path).lower()
    if not name.endswith(".safetensors") or "faceid" in name:
        return None
    try:
        stat = os.stat(path)
        key = (path, stat.st_size, stat.st_mtime_ns)
        if key not in _SEEN:
            with safe_open(path, framework="pt") as f:
                shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}  # noqa: SIM118
            _SEEN[key] = _adapter(path, name, shapes) or _file_encoder(path, shapes)
        return _SEEN[key]
    except Exception:
        return None


def _adapter(path: str, name: str, shapes: dict[str, list[int]]) -> Adapter | None:
    key = next((k for k in ("image_proj.proj_in.weight", "image_proj.proj.0.weight", "image_proj.proj.weight")
                if k in shapes), None)
    ip = shapes.get("ip_adapter.1.to_k_ip.weight")
    if key is None or ip is None or any(".lora" in k or "_lora" in k for k in shapes):
        return None
    kinds = frozenset({"face"}) if "face" in name else frozenset(REFERENCE_KINDS) - {"face"}
    return Adapter(path, int(ip[1]), int(shapes[key][1]), key != "image_proj.proj.weight", kinds)


def _file_encoder(path: str, shapes: dict[str, list[int]]) -> Encoder | None:
    projection, cls = shapes.get("visual_projection.weight"), shapes.get("vision_model.embeddings.class_embedding")
    return Encoder(path, int(cls[0]), int(projection[0])) if projection and cls else None


def file_encoder_config(path: str) -> Any:
    """The CLIPVisionConfig of a single-file encoder, from its tensors' shapes; the heads and activation (which
    shapes do not tell) of the known widths: OpenAI's ViT-L (1024), open_clip's ViT-H (1280) and ViT-bigG (1664)."""
    from safetensors import safe_open
    from transformers import CLIPVisionConfig

    with safe_open(path, framework="pt") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}  # noqa: SIM118
    pre = "vision_model."
    hidden, patch = shapes[pre + "embeddings.class_embedding"][0], shapes[pre + "embeddings.patch_embedding.weight"][2]
    grid = round((shapes[pre + "embeddings.position_embedding.weight"][0] - 1) ** 0.5)
    layers = len({k.split(".")[3] for k in shapes if k.startswith(pre + "encoder.layers.")})
    heads, act = {1024: (16, "quick_gelu"), 1280: (16, "gelu"), 1664: (16, "gelu")}.get(hidden, (max(1, hidden // 64), "gelu"))
    return CLIPVisionConfig(hidden_size=hidden, patch_size=patch, image_size=grid * patch, num_hidden_layers=layers,
                            intermediate_size=shapes[pre + "encoder.layers.0.mlp.fc1.weight"][0], num_attention_heads=heads,
                            hidden_act=act, projection_dim=shapes["visual_projection.weight"][0])


def encoder_info(folder: str) -> Encoder | None:
    """A CLIP image encoder folder (``config.json`` of a CLIPVisionModelWithProjection); None: none."""
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return None
    if config.get("model_type") != "clip_vision_model" or "projection_dim" not in config:
        return None
    return Encoder(folder, int(config["hidden_size"]), int(config["projection_dim"]))


def walk(folder: str, adapters: list[Adapter], encoders: list[Encoder], depth: int = 0) -> None:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            encoder = encoder_info(entry.path)
            if encoder is not None:
                encoders.append(encoder)
            elif depth < _MAX_DEPTH:
                walk(entry.path, adapters, encoders, depth + 1)
        elif isinstance(found := file_info(entry.path), Adapter):
            adapters.append(found)
        elif isinstance(found, Encoder):
            encoders.append(found)


def parse_ip_adapter_ref(text: str) -> str:
    """A ``--ip-adapter`` reference as a local folder or file: as given, or a hub id's cached snapshot."""
    path = os.path.expanduser(text.strip())
    if os.path.exists(path):
        return os.path.realpath(path)
    if not _HUB_ID.match(text.strip()):
        raise EngineError(f"--ip-adapter {text!r}: no such folder or file, and not a Hugging Face id like "
                          f"{IP_ADAPTER_REPO!r}", field="ip_adapter")
    from ..hf_cache import cached_snapshot

    folder = cached_snapshot(text.strip())  # also when only some of its files were fetched
    if folder is None:
        raise EngineError(f"--ip-adapter {text}: not in the Hugging Face cache; run `hf download {text}` (or only "
                          "the files you need) while online", field="ip_adapter")
    return folder


def load_encoder(path: str, dtype: Any) -> Any:
    """A CLIPVisionModelWithProjection from its folder or single file."""
    from safetensors.torch import load_file
    from transformers import CLIPVisionModelWithProjection

    if os.path.isdir(path):
        return CLIPVisionModelWithProjection.from_pretrained(path, dtype=dtype)
    model = CLIPVisionModelWithProjection(file_encoder_config(path))
    state = {k: v for k, v in load_file(path).items() if not k.endswith("position_ids")}
    model.load_state_dict(state, strict=True)
    return model.to(dtype)
