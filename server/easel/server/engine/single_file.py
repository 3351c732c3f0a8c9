"""Single-file checkpoints: read once, key layouts normalised, pipeline built offline from a config folder.

The config folder is the user's (``#config=`` or a sibling folder) or the one Easel ships for the
architecture the file's header shows (``library.configs``); no hub access either way. Each component
is converted from the same in-memory checkpoint by diffusers' single-file converters.

Key layouts accepted beyond diffusers' own (as ComfyUI accepts them): CLIP text-encoder keys without
the ``text_model.`` level (``cond_stage_model.transformer.embeddings.*``, older files and some
converters), float ``position_ids`` (dropped; the model makes its own), fp16/bf16/fp32 weights.
Pickles (``.ckpt``) are read only with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import inspect
import json
import os
from typing import Any

import diffusers
import torch

from ...client.codes import ErrorCode
from ..library.configs import config_folder
from ..library.detect import Description
from ..library.header import PICKLE_SUFFIXES, HeaderError, NeedsCode, read_header
from ..library.scan import describe_header
from .types import EngineError

CLIP_PREFIXES = ("cond_stage_model.transformer.", "conditioner.embedders.0.transformer.")
_SKIP = {"safety_checker", "feature_extractor", "image_encoder"}


def describe_file(path: str) -> Description:
    """The file's description from its header; EngineError (field model) naming the file if unreadable."""
    try:
        return describe_header(path, read_header(path))
    except (HeaderError, OSError) as exc:
        raise EngineError(f"model file {os.path.basename(path)}: {exc}", field="model",
                          code=ErrorCode.MODEL_LOAD_FAILED) from None


def shipped_config(path: str, model_id: str) -> tuple[str, Description]:
    """The shipped config folder for the architecture of ``path`` and the file's description; EngineError
    saying what to do if none fits."""
    desc = describe_file(path)
    if desc.problem:
        raise EngineError(f"model {model_id!r} ({os.path.basename(path)}): {desc.problem}", field="model",
                          code=ErrorCode.MODEL_LOAD_FAILED)
    if desc.kind != "checkpoint":
        raise EngineError(f"model {model_id!r}: {os.path.basename(path)} is a {desc.label}, not a checkpoint; "
                          "serve it as what it is (LoRAs: --loras-dir)", field="model", code=ErrorCode.MODEL_LOAD_FAILED)
    if desc.transformer:
        raise EngineError(
            f"model {model_id!r}: {os.path.basename(path)} is a {desc.label}; serve it as 'FILE#config=FOLDER', "
            "FOLDER a diffusers folder of the same model for the text encoders and VAE (its transformer/ needs "
            "only config.json), or put that folder beside it, named like the file without the extension, or in a "
            "models folder (--models-dir)",
            field="model", code=ErrorCode.MODEL_LOAD_FAILED)
    if desc.arch is None:
        family = desc.family.label if desc.family else "an unknown family"
        raise EngineError(
            f"model {model_id!r}: {os.path.basename(path)} is {family} with sizes Easel ships no config for "
            f"(cross-attention width {desc.context}); put its diffusers config folder beside it (named like the "
            "file, without the extension) or add '#config=<diffusers folder>' to the reference", field="model",
            code=ErrorCode.MODEL_LOAD_FAILED)
    return config_folder(desc.arch), desc


def scheduler_overrides(desc: Description | None) -> dict[str, Any]:
    """Scheduler settings a file's markers ask for beyond its architecture's config (v-prediction SDXL)."""
    if desc is None or not desc.prediction:
        return {}
    out: dict[str, Any] = {"prediction_type": "v_prediction"}
    if desc.prediction == "v-ztsnr":
        out.update(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    return out


def read_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors with normalised keys; pickles only through ``weights_only=True``."""
    if path.lower().endswith(PICKLE_SUFFIXES):
        from ..library.header import load_pickle

        try:
            state = load_pickle(path)
        except NeedsCode as exc:
            raise EngineError(f"refused: {exc}", field="model", code=ErrorCode.MODEL_LOAD_FAILED) from None
        except HeaderError as exc:
            raise EngineError(f"model file {os.path.basename(path)}: {exc}", field="model",
                              code=ErrorCode.MODEL_LOAD_FAILED) from None
    else:
        from safetensors.torch import load_file

        state = load_file(path)
    return normalise_keys(state)


def normalise_keys(state: dict[str, Any]) -> dict[str, Any]:
    """CLIP keys get their ``text_model.`` level back; ``position_ids`` go (a buffer the model makes)."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        if key.endswith("embeddings.position_ids"):
            continue
        for prefix in CLIP_PREFIXES:
            if key.startswith(prefix) and not key.startswith(prefix + "text_model.") \
                    and not key.startswith(prefix + "text_projection"):
                key = prefix + "text_model." + key[len(prefix):]
                break
        out[key] = value
    return out


def load_pipeline(path: str, config: str, dtype: torch.dtype, scheduler: dict[str, Any] | None = None) -> Any:
    """The pipeline of ``config``'s model_index, its components converted from the checkpoint at ``path``;
    ``scheduler``: settings that override the config's scheduler (``scheduler_overrides``)."""
    from diffusers.loaders.single_file import load_single_file_sub_model

    with open(os.path.join(config, "model_index.json"), encoding="utf-8") as f:
        index = json.load(f)
    cls_name = str(index.get("_class_name", "StableDiffusionPipeline"))
    if cls_name.startswith("LatentConsistency"):
        cls_name = "StableDiffusionPipeline"
    cls = getattr(diffusers, cls_name)
    checkpoint = read_checkpoint(path)
    parts: dict[str, Any] = {}
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list) or len(value) != 2 or value[0] is None or name in _SKIP:
            continue
        library, class_name = value
        parts[name] = load_single_file_sub_model(
            library_name=library, class_name=class_name, name=name, checkpoint=checkpoint,
            pipelines=diffusers.pipelines, is_pipeline_module=hasattr(diffusers.pipelines, library),
            cached_model_config_path=config, torch_dtype=dtype, local_files_only=True)
    del checkpoint
    if scheduler and parts.get("scheduler") is not None:
        parts["scheduler"] = type(parts["scheduler"]).from_config(parts["scheduler"].config, **scheduler)
    accepted = inspect.signature(cls.__init__).parameters
    for name in accepted:
        if name != "self" and name not in parts and accepted[name].default is inspect.Parameter.empty:
            parts[name] = None  # optional modules the config leaves out (safety checker, refiner's text_encoder)
    for flag in ("requires_safety_checker", "force_zeros_for_empty_prompt", "requires_aesthetics_score"):
        if flag in accepted:
            parts[flag] = bool(index.get(flag, False)) if flag != "force_zeros_for_empty_prompt" else \
                bool(index.get(flag, True))
    return cls(**parts)
