"""The model library: what the models folders hold, described from file headers, rescanned on demand.

``Library(folders).scan()`` lists every checkpoint, diffusers folder, LoRA, ControlNet, VAE and upscaler with
a stable id, a readable name, its family and native size, or a plain-words ``problem`` (truncated,
still being copied, unknown architecture, needs code to load …). Descriptions are cached by path,
size and modification time, so a rescan of an unchanged library only lists folders and stats files.
"""

from __future__ import annotations

import logging
import os
import re
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ..families import Family
from ..traits import INPAINT_CLASSES, detect, folder_configs, read_json
from .controls import config_context, config_family
from .detect import UNRECOGNISED, Description, describe, describe_gguf
from .header import GGUF_SUFFIX, Header, HeaderError, Incomplete, read_floats, read_header
from .layouts import candidates, model_folder_kind, sibling_config

log = logging.getLogger(__name__)
COPY_WINDOW = 120.0  # an incomplete file changed this recently is taken to be still copying
_SD2_V_PROBE = "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias"
_ID_SUFFIX = re.compile(r"\.(safetensors|ckpt|pt|pth|gguf)$", re.IGNORECASE)


@dataclass(frozen=True)
class Entry:
    """One model the library offers (or lists with a ``problem``)."""

    id: str  # stable: its path inside its kind folder, "/"-separated (LoRAs keep the extension)
    name: str  # readable: "dreamshaper 8"
    kind: str  # "checkpoint" | "lora" | "controlnet" | "vae" | "upscaler" | "base" | "unknown"
    path: str
    folder: bool  # a diffusers folder (else a single file)
    desc: Description
    size: int = 0
    config: str | None = None  # a single file's sibling diffusers config folder
    root: str = ""  # the models folder it was found in

    @property
    def problem(self) -> str | None:
        return self.desc.problem

    def to_dict(self) -> dict:
        d = self.desc
        note = f"{self.path}, served with the text encoders and VAE of {self.config}" if d.transformer and \
            self.config and not d.problem else None
        return {"id": self.id, "name": self.name, "kind": self.kind, "family": d.family, "inpaint": d.inpaint,
                "native": d.native, "label": d.label, "path": self.path, "size": self.size,
                "format": "folder" if self.folder else "single_file", "problem": d.problem, "note": note}


class Library:
    """The models of one or more folders (A1111, ComfyUI or flat layouts; docs/models.md)."""

    def __init__(self, folders: Sequence[str | os.PathLike], min_interval: float = 0.5, hint: str | None = None):
        self.hint = hint  # what files of a flat folder are, when they cannot be read (a LoRA folder: "lora")
        self.folders = [os.path.realpath(os.path.expanduser(os.fspath(f))) for f in folders]
        missing = [f for f in self.folders if not os.path.isdir(f)]
        if missing:
            raise ValueError(f"models folder {missing[0]} does not exist; create it or fix the path")
        self.min_interval = min_interval
        self._cache: dict[str, tuple[tuple[int, int], Description, int]] = {}
        self._entries: list[Entry] = []
        self._scanned = 0.0
        self._lock = threading.Lock()

    def entries(self, kind: str | None = None, fresh: bool = True) -> list[Entry]:
        """The library's entries (rescanned unless scanned less than ``min_interval`` s ago)."""
        with self._lock:
            if fresh and time.monotonic() - self._scanned >= self.min_interval:
                self._entries = self._scan()
                self._scanned = time.monotonic()
            return [e for e in self._entries if kind is None or e.kind == kind]

    def scan(self) -> list[Entry]:
        """Rescan now."""
        with self._lock:
            self._entries = self._scan()
            self._scanned = time.monotonic()
            return list(self._entries)

    def _scan(self) -> list[Entry]:
        out: list[Entry] = []
        seen: set[str] = set()
        ids: dict[tuple[str, str], int] = {}
        for root in self.folders:
            for found in candidates(root):
                real = os.path.realpath(found.path)
                if real in seen:
                    continue
                seen.add(real)
                entry = self._entry(found.path, found.rel, found.hint or self.hint, found.is_dir, root)
                if entry is None:
                    continue
                key = (entry.kind, entry.id)
                if key in ids:  # the same relative path in two folders: the later one gets -2, -3, ...
                    ids[key] += 1
                    entry = replace(entry, id=f"{entry.id}-{ids[key]}")
                else:
                    ids[key] = 1
                out.append(entry)
        live = {e.path for e in out}
        self._cache = {p: v for p, v in self._cache.items() if p in live}
        return with_bases(out)

    def _entry(self, path: str, rel: str, hint: str | None, is_dir: bool, root: str) -> Entry | None:
        if is_dir:
            desc = describe_folder(path, model_folder_kind(path) or "checkpoint")
            kind = desc.kind  # a flow family's folder without transformer weights: "base"
            size = 0
        else:
            try:
                st = os.stat(path)
            except OSError:
                return None
            stamp = (st.st_size, st.st_mtime_ns)
            cached = self._cache.get(path)
            if cached is not None and cached[0] == stamp:
                desc = cached[1]
            else:
                desc = describe_file(path, st.st_mtime, changed=cached is not None)
                self._cache[path] = (stamp, desc, st.st_size)
                if desc.problem:
                    log.warning("models: %s: %s", path, desc.problem)
            size = st.st_size
            if hint == "upscaler" and desc.kind == "unknown" and desc.problem == UNRECOGNISED:
                desc = Description("upscaler")  # spandrel knows more architectures than the header cues
            kind = desc.kind
            if kind == "unknown" and hint is None and desc.problem and "which Easel does not use" in desc.problem:
                log.info("models: skipping %s: %s", path, desc.problem)
                return None
            if kind == "unknown" and hint is not None:
                kind = hint  # listed where the folder says it belongs, with its problem
        config = None if is_dir else sibling_config(path, "controlnet" if kind == "controlnet" else "checkpoint")
        if kind == "checkpoint" and desc.family is not None and not desc.family.served:
            kind = "refiner"  # served with --refiner, not as a model of its own
        if kind in ("checkpoint", "controlnet") and not is_dir and desc.problem is None and \
                (config is not None or not desc.transformer):  # a transformer without one: with_bases
            desc = with_config(desc, config, path)
        stem = _ID_SUFFIX.sub("", rel)
        entry_id = rel if kind == "lora" else stem
        name = os.path.basename(stem).replace("_", " ").strip() or stem
        return Entry(entry_id, name, kind, path, is_dir, desc, size, config, root)


def describe_file(path: str, mtime: float, changed: bool = False) -> Description:
    """Describe one weights file; problems (incomplete, corrupt, needs code) come back in ``problem``."""
    try:
        header = read_header(path)
    except Incomplete as exc:
        recent = changed or time.time() - mtime < COPY_WINDOW
        if recent:
            return Description("unknown", problem=f"still being copied ({exc}); it appears when complete")
        return Description("unknown", problem=f"truncated: {exc}; copy or download it again")
    except HeaderError as exc:
        return Description("unknown", problem=str(exc))
    except OSError as exc:
        return Description("unknown", problem=f"cannot be read: {exc.strerror or exc}")
    return describe_header(path, header)


def describe_header(path: str, header: Header) -> Description:
    """The description of the file at ``path`` from its header (GGUF files by their own cues)."""
    if path.lower().endswith(GGUF_SUFFIX):
        return describe_gguf(header.tensors, header.metadata.get("general.architecture", ""))
    return describe(header.tensors, v_prediction(path, header))


def v_prediction(path: str, header: Header) -> bool | None:
    """SD 2.x 768 models predict v: an A1111-style sibling .yaml says so, or ComfyUI's heuristic (the
    spread of one layer-norm bias, which v-prediction training widens) does."""
    yaml = os.path.splitext(path)[0] + ".yaml"
    if os.path.isfile(yaml):
        try:
            with open(yaml, encoding="utf-8") as f:
                text = f.read(65536)
            return bool(re.search(r"parameterization:\s*[\"']?v[\"']?\s*$", text, re.MULTILINE))
        except OSError:
            pass
    if _SD2_V_PROBE not in header.tensors or header.offsets is None:
        return None
    try:
        values = read_floats(path, header, _SD2_V_PROBE)
    except (OSError, KeyError, ValueError):
        return None
    return len(values) > 1 and statistics.pstdev(values) > 0.09


def describe_folder(path: str, kind: str) -> Description:
    """A diffusers folder, from its configs (json only)."""
    if kind == "checkpoint":
        index, unet, vae, sched = folder_configs(path)
        cls = str((index or {}).get("_class_name", ""))
        family = Family.of_pipeline(cls) or INPAINT_CLASSES.get(cls)
        if family is not None and family.flow:
            return describe_flow_folder(path, (index, unet, vae, sched))
        if not os.path.isdir(os.path.join(path, "unet")):
            return Description("checkpoint", problem=f"a {cls or 'diffusers'} folder without a UNet or a transformer "
                               "of a family Easel serves")
        if not _has_weights(os.path.join(path, "unet")):
            return Description("checkpoint", problem="its unet/ folder has no weights (a config-only copy); "
                               "download the complete folder")
        traits = detect(os.path.basename(path), index, unet, vae, sched)
        family = Family.SDXL_REFINER if (index or {}).get("requires_aesthetics_score") else traits.family
        return Description("checkpoint", family, traits.inpaint_unet, None, traits.native[0],
                           (unet or {}).get("cross_attention_dim"))
    config = read_json(os.path.join(path, "config.json")) or {}
    if not _has_weights(path):
        return Description(kind, problem="the folder has a config.json but no weights; download the complete folder")
    if kind == "controlnet":  # FLUX.1 / SD 3 from the class, SD 1.x/2.x/SDXL from the widths
        return Description("controlnet", config_family(config), context=config_context(config))
    return Description(kind)


def describe_flow_folder(path: str, configs: tuple) -> Description:
    """A flow family's pipeline folder: a model when its transformer/ has weights, else a *base folder*: the
    text encoders and VAE that the family's transformer files (flow_files.py) are served with."""
    index, transformer, vae, sched = configs
    traits = detect(os.path.basename(path), index, transformer, vae, sched)
    if transformer is None:
        return Description("checkpoint", traits.family, problem="it has no transformer/config.json, which even a "
                           "base folder for transformer files needs; download the complete folder")
    context = transformer.get("joint_attention_dim") or transformer.get("cap_feat_dim")  # the text encoder's width
    kind = "checkpoint" if _has_weights(os.path.join(path, "transformer")) else "base"
    return Description(kind, traits.family, traits.inpaint_unet, None, traits.native[0],
                       context if isinstance(context, int) else None)


def base_folders(entries: list[Entry]) -> list[Entry]:
    """The library's folders a transformer file may take its text encoders and VAE from: config-only ones
    (kind ``base``) first, then whole folders."""
    return sorted((e for e in entries if e.folder and e.kind in ("base", "checkpoint") and e.problem is None),
                  key=lambda e: e.kind != "base")


def base_for(desc: Description, bases: list[Entry]) -> str | None:
    """The first of ``bases`` (``base_folders``) a transformer file of ``desc`` runs with (``fits_base``)."""
    return next((b.path for b in bases if fits_base(desc, b.desc)), None)


def with_bases(entries: list[Entry]) -> list[Entry]:
    """Transformer files without a sibling config folder get the first base folder of their model in the
    library (``base_for``), or say what to add."""
    bases = base_folders(entries)
    out = []
    for entry in entries:
        if entry.desc.transformer and entry.config is None and entry.problem is None:
            base = base_for(entry.desc, bases)
            entry = replace(entry, config=base, desc=with_config(entry.desc, base, entry.path))
        out.append(entry)
    return out


def fits_base(file: Description, folder: Description) -> bool:
    """Whether a transformer file runs with a folder's text encoders and VAE: the same family and kind
    (inpainting or not), and the text encoder's width the file takes (Klein 4B's and 9B's differ)."""
    return (folder.family == file.family and folder.inpaint == file.inpaint
            and (None in (folder.context, file.context) or folder.context == file.context))


def with_config(desc: Description, config: str | None, path: str) -> Description:
    """A single file's description refined by its sibling config folder, or a problem when its sizes
    match no shipped config and it has none (checkpoints and ControlNets)."""
    if config is not None and desc.kind == "controlnet":
        return desc
    if config is not None:
        traits = detect(os.path.basename(path), *folder_configs(config))
        if desc.transformer and traits.family != desc.family:
            return replace(desc, problem=f"a {desc.label}, but its config folder {config} is a {traits.family.label} "
                           f"pipeline; use a {desc.family.label if desc.family else 'matching'} folder")
        return replace(desc, native=traits.native[0], context=traits.context or desc.context)
    if desc.arch is None:
        stem = os.path.splitext(os.path.basename(path))[0]
        if desc.transformer:
            family = desc.family.label if desc.family else "matching"
            family += " inpainting (FluxFillPipeline)" if desc.inpaint else ""  # a Fill transformer: a Fill folder
            return replace(desc, problem=f"a {desc.label} needs the text encoders and VAE of a {family} base folder: "
                           f"put a diffusers folder of the same model beside it, named {stem}/ (its transformer/ "
                           "needs only config.json), or anywhere in the models folders")
        what = "ControlNet config folder (its config.json)" if desc.kind == "controlnet" else "diffusers config folder"
        return replace(desc, problem=f"its sizes match no architecture Easel ships a config for (cross-attention "
                       f"width {desc.context}); put its {what} beside it, named {stem}/")
    return desc


def _has_weights(folder: str) -> bool:
    try:
        return any(n.endswith((".safetensors", ".bin")) for n in os.listdir(folder))
    except OSError:
        return False
