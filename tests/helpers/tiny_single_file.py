"""Write a tiny diffusers pipeline as one original-layout (ldm) single-file checkpoint, for tests
(and a ControlNet as one file, original or diffusers layout: ``write_control_file``).

A generic converter driven by the model configs (not SD1.5-hard-coded), so tiny UNets with other
block layouts map correctly; text encoders get the ``text_model.`` prefix real files use.
"""

from __future__ import annotations

import json
import os

import torch

_RESNET_LDM = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
               ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]


def _unet_block_map(config: dict) -> dict[str, str]:
    """diffusers UNet module prefixes -> ldm ``input_blocks``/``output_blocks`` prefixes, from the config."""
    per = config["layers_per_block"]
    per = per[0] if isinstance(per, (list, tuple)) else per
    m = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
         "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
         "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
         "mid_block.resnets.0": "middle_block.0", "mid_block.attentions.0": "middle_block.1",
         "mid_block.resnets.1": "middle_block.2"}
    ups = config["up_block_types"]
    for i in range(len(config["down_block_types"])):
        for j in range(per):
            m[f"down_blocks.{i}.resnets.{j}"] = f"input_blocks.{1 + i * (per + 1) + j}.0"
            m[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{1 + i * (per + 1) + j}.1"
        m[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{(i + 1) * (per + 1)}.0.op"
        for j in range(per + 1):
            m[f"up_blocks.{i}.resnets.{j}"] = f"output_blocks.{i * (per + 1) + j}.0"
            m[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{i * (per + 1) + j}.1"
        has_attention = "CrossAttn" in ups[i]
        m[f"up_blocks.{i}.upsamplers.0.conv"] = f"output_blocks.{i * (per + 1) + per}.{2 if has_attention else 1}.conv"
    return m


def unet_to_ldm(state: dict, config: dict) -> dict:
    blocks = _unet_block_map(config)
    prefixes = sorted(blocks, key=len, reverse=True)
    out = {}
    for key, value in state.items():
        prefix = next((p for p in prefixes if key.startswith(p + ".")), None)
        if prefix is None:
            raise KeyError(f"no ldm name for UNet key {key}")
        rest = key[len(prefix) + 1:]
        if ".resnets." in prefix:
            for new, old in _RESNET_LDM:
                if rest.startswith(new + "."):
                    rest = old + rest[len(new):]
        out["model.diffusion_model." + blocks[prefix] + "." + rest] = value
    return out


def controlnet_to_ldm(state: dict, config: dict, prefix: str = "") -> dict:
    """A diffusers ControlNet's state dict in the original layout (``input_hint_block``, ``zero_convs``,
    ``middle_block_out``; the UNet part as ``unet_to_ldm`` names it), keys under ``prefix``."""
    unet, out = {}, {}
    hint_out = 4 * len(config["conditioning_embedding_out_channels"]) - 2  # convs and SiLUs alternate
    for key, value in state.items():
        parts = key.split(".")
        if key.startswith("controlnet_cond_embedding.blocks."):
            out[f"input_hint_block.{2 * (int(parts[2]) + 1)}.{parts[3]}"] = value
        elif key.startswith("controlnet_cond_embedding."):
            out[f"input_hint_block.{0 if parts[1] == 'conv_in' else hint_out}.{parts[2]}"] = value
        elif key.startswith("controlnet_down_blocks."):
            out[f"zero_convs.{parts[1]}.0.{parts[2]}"] = value
        elif key.startswith("controlnet_mid_block."):
            out[f"middle_block_out.0.{parts[1]}"] = value
        else:
            unet[key] = value
    blocks = {**config, "up_block_types": ["UpBlock2D"] * len(config["down_block_types"])}
    out.update({k.removeprefix("model.diffusion_model."): v for k, v in unet_to_ldm(unet, blocks).items()})
    return {prefix + k: v for k, v in out.items()}


def write_control_file(folder: str | os.PathLike, out_path: str | os.PathLike, original: bool = True,
                       prefix: str = "") -> str:
    """A saved diffusers ControlNet folder as one file: original layout (``controlnet_to_ldm``, keys under
    ``prefix``) or its diffusers tensors as they are; ``.pth``/``.ckpt`` names get a torch pickle."""
    from safetensors.torch import load_file, save_file

    folder = os.fspath(folder)
    state = load_file(os.path.join(folder, "diffusion_pytorch_model.safetensors"))
    if original:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            state = controlnet_to_ldm(state, json.load(f), prefix)
    out = os.fspath(out_path)
    state = {k: v.contiguous() for k, v in state.items()}
    if out.endswith((".pth", ".ckpt")):
        torch.save(state, out)
    else:
        save_file(state, out)
    return out


def vae_to_ldm(state: dict, config: dict) -> dict:
    n = len(config["block_out_channels"])
    out = {}
    for key, value in state.items():
        k = key
        for i in range(n):
            k = k.replace(f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block.")
            k = k.replace(f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.")
            k = k.replace(f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{n - 1 - i}.block.")
            k = k.replace(f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{n - 1 - i}.upsample.")
        k = k.replace("mid_block.resnets.0.", "mid.block_1.").replace("mid_block.resnets.1.", "mid.block_2.")
        if "mid_block.attentions.0." in k:
            k = k.replace("mid_block.attentions.0.", "mid.attn_1.")
            for new, old in (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"),
                             ("to_out.0", "proj_out")):
                k = k.replace(f".{new}.", f".{old}.")
            if value.ndim == 2:
                value = value[:, :, None, None]  # ldm stores the attention projections as 1x1 convs
        k = k.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        out["first_stage_model." + k] = value
    return out


def _text_model_keys(state: dict) -> dict:
    """transformers >= 5.6 saves CLIPTextModel without the ``text_model.`` prefix; put it back."""
    return {k if k.startswith(("text_model.", "text_projection")) else "text_model." + k: v for k, v in state.items()}


def clip_to_ldm(state: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in _text_model_keys(state).items() if not k.endswith("position_ids")}


def open_clip_to_ldm(state: dict, prefix: str) -> dict:
    """CLIPTextModelWithProjection -> OpenCLIP layout (fused q/k/v ``in_proj``), as SDXL files hold it."""
    state = _text_model_keys(state)
    out, qkv = {}, {}
    renames = [("text_model.encoder.layers.", "transformer.resblocks."), (".self_attn.out_proj.", ".attn.out_proj."),
               (".layer_norm1.", ".ln_1."), (".layer_norm2.", ".ln_2."), (".mlp.fc1.", ".mlp.c_fc."),
               (".mlp.fc2.", ".mlp.c_proj.")]
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue
        if key == "text_model.embeddings.position_embedding.weight":
            out[prefix + "positional_embedding"] = value
        elif key == "text_model.embeddings.token_embedding.weight":
            out[prefix + "token_embedding.weight"] = value
        elif key.startswith("text_model.final_layer_norm."):
            out[prefix + "ln_final." + key.rsplit(".", 1)[1]] = value
        elif key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()
        elif ".self_attn." in key and key.split(".")[-2] in ("q_proj", "k_proj", "v_proj"):
            layer = key.split(".")[3]
            qkv.setdefault((layer, key.rsplit(".", 1)[1]), {})[key.split(".")[-2]] = value
        else:
            for new, old in renames:
                key = key.replace(new, old)
            out[prefix + key] = value
    for (layer, kind), parts in qkv.items():
        fused = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]])
        out[f"{prefix}transformer.resblocks.{layer}.attn.in_proj_{kind}"] = fused
    return out


def write_single_file(pipe_folder: str | os.PathLike, out_path: str | os.PathLike) -> str:
    """Convert a saved SD or SDXL diffusers folder to one original-layout ``.safetensors`` checkpoint."""
    from safetensors.torch import load_file, save_file

    folder = os.fspath(pipe_folder)

    def weights(sub: str) -> dict:
        names = [f for f in os.listdir(os.path.join(folder, sub)) if f.endswith(".safetensors")]
        return load_file(os.path.join(folder, sub, names[0]))

    def config(sub: str) -> dict:
        with open(os.path.join(folder, sub, "config.json"), encoding="utf-8") as f:
            return json.load(f)

    ckpt = {**unet_to_ldm(weights("unet"), config("unet")), **vae_to_ldm(weights("vae"), config("vae"))}
    if os.path.isdir(os.path.join(folder, "text_encoder_2")):  # SDXL
        ckpt.update(clip_to_ldm(weights("text_encoder"), "conditioner.embedders.0.transformer."))
        ckpt.update(open_clip_to_ldm(weights("text_encoder_2"), "conditioner.embedders.1.model."))
    else:
        ckpt.update(clip_to_ldm(weights("text_encoder"), "cond_stage_model.transformer."))
    out = os.fspath(out_path)
    save_file({k: v.contiguous() for k, v in ckpt.items()}, out)
    return out
