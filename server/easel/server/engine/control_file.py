"""ControlNet single files (what A1111's ``models/ControlNet`` and ComfyUI's ``models/controlnet`` hold):
their config, what they serve, and loading them offline.

A file is described from its header (``library.detect.describe_controlnet``: original or diffusers layout,
the family from its tensors, a ControlNet Union by its task embedding). Its config is the ControlNet config
folder beside it (``name/`` or ``name.config/`` holding a config.json), else the one Easel ships for its
sizes (``library.configs.CONTROL_CONFIGS``). A single-kind ControlNet loads with
``ControlNetModel.from_single_file`` from that config, with no hub access; a union (which diffusers cannot
load from a single file) is built from the config and given the file's tensors. Either way the file's
tensors must be exactly the config's: anything missing, extra or of another shape is an error that says so.
Pickles (``.pth``, ``.ckpt``) are read only with ``weights_only=True``, as checkpoints are.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import torch

from ..library.configs import control_folder
from ..library.controls import ControlInfo, config_info
from ..library.detect import Description
from ..library.layouts import sibling_config
from ..library.scan import describe_file, with_config
from ..traits import read_json
from .single_file import read_checkpoint
from .types import EngineError

_HINT_NAMES = ("input_hint_block.0.weight", "controlnet_cond_embedding.conv_in.weight")
_UNION_TENSOR = "task_embedding"  # xinsir's ControlNet Union: one row per control type


def describe_control_file(path: str) -> tuple[Description, str]:
    """A ControlNet file named at start-up (``--control-model FILE``): its description and config folder;
    EngineError (field control_model) saying why it cannot be served."""
    name = os.path.basename(path)
    try:
        desc = describe_file(path, os.stat(path).st_mtime)
    except OSError as exc:
        raise EngineError(f"control model {name}: cannot be read: {exc.strerror or exc}", field="control_model") from None
    if desc.kind != "controlnet" and desc.problem is None:
        raise EngineError(f"control model {name} is {_article(desc.label)}, not a ControlNet; name a ControlNet file "
                          "or folder", field="control_model")
    sibling = sibling_config(path, "controlnet")
    if desc.problem is None:
        desc = with_config(desc, sibling, path)
    if desc.problem:
        raise EngineError(f"control model {name}: {desc.problem}", field="control_model")
    return desc, file_config(desc, sibling)


def _article(label: str) -> str:
    return ("an " if label[:1].lower() in "aeiou" else "a ") + label


def file_config(desc: Description, sibling: str | None) -> str:
    """The config folder of a ControlNet file: the one beside it, else the shipped one its sizes match."""
    if sibling is not None:
        return sibling
    if desc.arch is None:
        raise ValueError("a ControlNet file with no config folder beside it and sizes Easel ships no config for")
    return control_folder(desc.arch)


def file_info(name: str, desc: Description, config: str) -> ControlInfo:
    """What a ControlNet file serves: kinds from its name (a union's from its control types), family and
    cross-attention width from its tensors."""
    settings = read_json(os.path.join(config, "config.json")) or {}
    if desc.control_types is not None:
        settings = {**settings, "_class_name": "ControlNetUnionModel", "num_control_type": desc.control_types}
    else:
        settings = {**settings, "_class_name": "ControlNetModel"}
    info = config_info(name, settings)
    return dataclasses.replace(info, family=desc.family or info.family, context=desc.context or info.context)


def load_control_file(path: str, config: str, dtype: torch.dtype) -> Any:
    """The ControlNetModel (or ControlNetUnionModel) of the file at ``path`` with the config folder
    ``config``, in ``dtype`` on the CPU; ValueError saying which tensors do not fit the config."""
    from diffusers import ControlNetModel, ControlNetUnionModel

    state = _unprefixed(read_checkpoint(path))
    with open(os.path.join(config, "config.json"), encoding="utf-8") as f:
        settings = json.load(f)
    union = _UNION_TENSOR in state
    if union:
        settings["num_control_type"] = int(state[_UNION_TENSOR].shape[0])
    elif "time_embedding.linear_1.weight" not in state:
        state = to_diffusers(state, settings)
    cls = ControlNetUnionModel if union else ControlNetModel
    with torch.device("meta"):
        model = cls.from_config({k: v for k, v in settings.items() if not k.startswith("_")})
    check_tensors(model.state_dict(), state, config)
    if union:
        model.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()},
                              strict=True, assign=True)
    else:
        model = ControlNetModel.from_single_file(state, config=config, local_files_only=True, torch_dtype=dtype)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise ValueError(f"{len(left)} tensors were left unloaded (e.g. {left[0]})")
    return model.eval()


def _unprefixed(state: dict[str, Any]) -> dict[str, Any]:
    """The ControlNet's tensors without the prefix some files put before them (``control_model.``)."""
    for key in state:
        for name in _HINT_NAMES:
            if key.endswith(name) and key != name:
                prefix = key[: -len(name)]
                return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def to_diffusers(state: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """An original-layout ControlNet's tensors under diffusers' names: diffusers' own converter, plus the
    SDXL text-time (or class) embedding it leaves out."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING, convert_controlnet_checkpoint

    out = convert_controlnet_checkpoint(state, settings)
    for embedding in ("addition_embed_type", "class_embed_type"):
        if settings.get(embedding):
            mapping = DIFFUSERS_TO_LDM_MAPPING["controlnet"][embedding]
            out.update({new: state[old] for new, old in mapping.items() if old in state})
    return {k: v for k, v in out.items() if v is not None}


def check_tensors(want: dict[str, Any], got: dict[str, Any], config: str) -> None:
    """ValueError naming what differs when ``got`` (the file's tensors) is not exactly ``want`` (the config's)."""
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    shapes = [k for k in want if k in got and tuple(got[k].shape) != tuple(want[k].shape)]
    if not (missing or extra or shapes):
        return
    parts = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
             f"{len(extra)} it does not use (e.g. {extra[0]})" if extra else "",
             f"{len(shapes)} of other sizes (e.g. {shapes[0]}: {tuple(got[shapes[0]].shape)} in the file, "
             f"{tuple(want[shapes[0]].shape)} in the config)" if shapes else ""]
    raise ValueError(f"its tensors do not fit the config {config}: " + "; ".join(p for p in parts if p))
