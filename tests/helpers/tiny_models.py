"""Tiny random-weight Stable Diffusion / SDXL pipelines for tests, built offline and saved to disk.

They are real diffusers pipelines (UNet2DConditionModel, AutoencoderKL, CLIP text encoders, a
hand-written CLIP BPE tokenizer) with toy sizes, so tests go through the real loading code fast:

* ``build_tiny_sd(folder)`` / ``build_tiny_sdxl(folder)`` save a diffusers folder and return its path.
  The VAE has SD's geometry (4 blocks, scale factor 8) and the UNet sample_size is 8, so the native
  size is 64 px like a real model's 512/1024, only smaller. Options: ``inpaint_unet=True`` (9-channel
  inpainting UNet), ``scheduler="euler"|"euler_a_trailing"|"lcm"`` (the model's own scheduler).
* ``write_single_file(pipe_folder, out_path)`` converts such a folder (any UNet/VAE layout, not
  hard-coded to SD 1.5's) to one original-layout ("ldm") ``.safetensors`` checkpoint, SD or SDXL.
* ``make_fake_hub_cache(pipe_folder, cache_dir, repo_id)`` lays a folder out as a Hugging Face cache
  entry (``models--org--name/snapshots/<rev>/`` + ``refs/main``) so hub ids resolve offline.
* Power features: ``build_tiny_controlnet`` (a ControlNet for a saved tiny pipeline, with random
  instead of zero output convolutions so it has an effect), ``write_tiny_lora`` (a diffusers/PEFT
  LoRA file for a saved tiny pipeline), ``build_tiny_refiner`` (an SDXL refiner: text_encoder_2 only,
  aesthetic-score embedding) and ``build_tiny_safety_checker`` (random CLIP; flags every image or none).

Build at test time (session fixtures in conftest.py); never commit saved folders, because folders
saved by one transformers version may not load in another.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings

import torch

__all__ = ["build_tiny_sd", "build_tiny_sdxl", "write_single_file", "make_fake_hub_cache", "TINY_NATIVE",
           "build_tiny_controlnet", "write_tiny_lora", "build_tiny_refiner", "build_tiny_safety_checker"]

TINY_NATIVE = 64  # unet sample_size 8 x VAE scale factor 8


# ----------------------------------------------------------------------------- tokenizer


def _byte_chars() -> list[str]:
    """The 256 printable characters CLIP's byte-level BPE uses for the 256 byte values."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def write_tokenizer(folder: str) -> str:
    """A minimal CLIP tokenizer: one token per byte (plus end-of-word forms), no merges."""
    os.makedirs(folder, exist_ok=True)
    chars = _byte_chars()
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(tokens)}, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
    return folder


def _tokenizer(tmp: str):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(write_tokenizer(tmp), model_max_length=77)


def _text_config(tok, hidden: int = 32, projection_dim: int | None = None):
    from transformers import CLIPTextConfig

    kw = {"projection_dim": projection_dim} if projection_dim else {}
    return CLIPTextConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                          hidden_size=hidden, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                          vocab_size=len(tok), max_position_embeddings=77, hidden_act="gelu", **kw)


# ----------------------------------------------------------------------------- components


def _vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(block_out_channels=[8, 16, 16, 16], in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                         layers_per_block=1, norm_num_groups=4, sample_size=TINY_NATIVE)


def _scheduler(kind: str):
    from diffusers import EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, LCMScheduler

    common = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1}
    if kind == "euler":
        return EulerDiscreteScheduler(timestep_spacing="leading", **common)
    if kind == "euler_a_trailing":  # what turbo models ship
        return EulerAncestralDiscreteScheduler(timestep_spacing="trailing", **common)
    if kind == "lcm":
        return LCMScheduler(**common)
    raise ValueError(f"unknown scheduler kind {kind!r}")


def _save(pipe, folder: str) -> str:
    os.makedirs(folder, exist_ok=True)
    pipe.save_pretrained(folder)
    return folder


def build_tiny_sd(folder: str | os.PathLike, *, inpaint_unet: bool = False, scheduler: str = "euler") -> str:
    """Save a tiny SD 1.x-style pipeline (CLIP 32-d, UNet blocks (4, 8), SD-geometry VAE) to ``folder``."""
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    folder = os.fspath(folder)
    tok = _tokenizer(folder + ".tok")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=9 if inpaint_unet else 4, out_channels=4, block_out_channels=(4, 8),
        layers_per_block=1, norm_num_groups=2, cross_attention_dim=32, attention_head_dim=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(_text_config(tok))
    cls = StableDiffusionInpaintPipeline if inpaint_unet else StableDiffusionPipeline
    pipe = cls(vae=_vae(), text_encoder=text_encoder, tokenizer=tok, unet=unet, scheduler=_scheduler(scheduler),
               safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    shutil.rmtree(folder + ".tok", ignore_errors=True)
    return _save(pipe, folder)


def build_tiny_sdxl(folder: str | os.PathLike, *, scheduler: str = "euler") -> str:
    """Save a tiny SDXL pipeline (32-d and 48-d text encoders, text_time embedding, SD-geometry VAE)."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    folder = os.fspath(folder)
    tok = _tokenizer(folder + ".tok")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4), use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + 32,  # 6 time ids x 8 + pooled text (projection_dim)
        cross_attention_dim=32 + 48)  # hidden sizes of both text encoders concatenated
    torch.manual_seed(0)
    te1 = CLIPTextModel(_text_config(tok))
    # text_encoder_2 must differ in width from text_encoder (as 1280 vs 768 do in real SDXL): diffusers'
    # single-file loader tells the two encoders apart by their embedding width
    te2 = CLIPTextModelWithProjection(_text_config(tok, hidden=48, projection_dim=32))
    pipe = StableDiffusionXLPipeline(vae=_vae(), text_encoder=te1, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok,
                                     unet=unet, scheduler=_scheduler(scheduler))
    shutil.rmtree(folder + ".tok", ignore_errors=True)
    return _save(pipe, folder)


from helpers.tiny_single_file import write_single_file  # noqa: E402 - kept importable from here


def config_only_copy(pipe_folder: str | os.PathLike, out_folder: str | os.PathLike) -> str:
    """A copy of a diffusers folder without weight files: enough as a single-file ``#config=``."""
    src, dst = os.fspath(pipe_folder), os.fspath(out_folder)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    return dst


# ----------------------------------------------------------------------------- fake hub cache


def make_fake_hub_cache(pipe_folder: str | os.PathLike, cache_dir: str | os.PathLike, repo_id: str,
                        revision: str = "0123456789abcdef0123456789abcdef01234567") -> str:
    """Copy a folder into ``cache_dir`` as the HF cache entry of ``repo_id``; returns the snapshot path."""
    org_name = repo_id.replace("/", "--")
    root = os.path.join(os.fspath(cache_dir), f"models--{org_name}")
    snapshot = os.path.join(root, "snapshots", revision)
    shutil.copytree(os.fspath(pipe_folder), snapshot, dirs_exist_ok=True)
    os.makedirs(os.path.join(root, "refs"), exist_ok=True)
    with open(os.path.join(root, "refs", "main"), "w", encoding="utf-8") as f:
        f.write(revision)
    return snapshot


# ----------------------------------------------------------------------------- power features


def _sdxl_unet(cross_attention_dim: int, time_ids: int):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4), use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=time_ids * 8 + 32, cross_attention_dim=cross_attention_dim)


def build_tiny_controlnet(pipe_folder: str | os.PathLike, folder: str | os.PathLike, seed: int = 0) -> str:
    """Save a ControlNetModel made from a saved tiny pipeline's UNet (SD or SDXL) to ``folder``.

    A fresh ControlNet's output convolutions are zero (it changes nothing until trained), and its
    default-initialised conditioning embedding all but loses the image on the way down; here both
    are random with a larger spread, so the control image visibly steers the result.
    """
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(os.fspath(pipe_folder), subfolder="unet")
    torch.manual_seed(seed)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 4, 4, 4))  # 1/8 size
    embedding = controlnet.controlnet_cond_embedding
    with torch.no_grad():
        for conv, std in [*((c, 0.5) for c in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]),
                          *((c, 0.4) for c in [embedding.conv_in, *embedding.blocks, embedding.conv_out])]:
            conv.weight.normal_(0.0, std)
            conv.bias.zero_()
    controlnet.save_pretrained(os.fspath(folder))
    return os.fspath(folder)


def write_tiny_lora(pipe_folder: str | os.PathLike, out_path: str | os.PathLike, seed: int = 0, rank: int = 4,
                    text_encoder: bool = False) -> str:
    """Write a diffusers-format LoRA (.safetensors) for a saved tiny SD or SDXL pipeline's UNet
    (and its first text encoder); random non-zero A and B, so it changes the output."""
    import diffusers
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    folder = os.fspath(pipe_folder)
    xl = os.path.isdir(os.path.join(folder, "text_encoder_2"))
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    # peft's own public functions, not transformers'/diffusers' add_adapter wrappers (whose peft
    # version checks move with each release).
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                       target_modules=["to_q", "to_k", "to_v", "to_out.0"]), unet)
    with warnings.catch_warnings():  # "could not find a config file": the tiny UNet has no vocabulary to check
        warnings.simplefilter("ignore", UserWarning)
        layers = {"unet_lora_layers": get_peft_model_state_dict(unet)}
    if text_encoder:
        from transformers import CLIPTextModel

        te = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")
        inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                           target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]), te)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            layers["text_encoder_lora_layers"] = get_peft_model_state_dict(te)
    cls = diffusers.StableDiffusionXLPipeline if xl else diffusers.StableDiffusionPipeline
    out = os.fspath(out_path)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    cls.save_lora_weights(os.path.dirname(out) or ".", weight_name=os.path.basename(out), **layers)
    return out


def build_tiny_refiner(folder: str | os.PathLike) -> str:
    """Save a tiny SDXL refiner (img2img pipeline, text_encoder_2 only, aesthetic-score time ids) that fits
    ``build_tiny_sdxl``'s VAE latents."""
    from diffusers import StableDiffusionXLImg2ImgPipeline
    from transformers import CLIPTextModelWithProjection

    folder = os.fspath(folder)
    tok = _tokenizer(folder + ".tok")
    torch.manual_seed(1)
    unet = _sdxl_unet(cross_attention_dim=48, time_ids=5)  # 5 time ids: size, crop, aesthetic score
    torch.manual_seed(0)
    te2 = CLIPTextModelWithProjection(_text_config(tok, hidden=48, projection_dim=32))
    pipe = StableDiffusionXLImg2ImgPipeline(vae=_vae(), text_encoder=None, text_encoder_2=te2, tokenizer=None,
                                            tokenizer_2=tok, unet=unet, scheduler=_scheduler("euler"),
                                            requires_aesthetics_score=True)
    shutil.rmtree(folder + ".tok", ignore_errors=True)
    return _save(pipe, folder)


def build_tiny_safety_checker(folder: str | os.PathLike, flag_all: bool = True) -> str:
    """Save a tiny random StableDiffusionSafetyChecker + its image processor; it flags every image
    (``flag_all``) or none, since its concept thresholds are pushed to one side."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    small = {"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_hidden_layers": 1}
    config = CLIPConfig(text_config={**small, "vocab_size": 100, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
                        vision_config={**small, "image_size": 32, "patch_size": 8}, projection_dim=8)
    torch.manual_seed(0)
    checker = StableDiffusionSafetyChecker(config)
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(-10.0 if flag_all else 10.0)
        checker.special_care_embeds_weights.fill_(-10.0 if flag_all else 10.0)
    folder = os.fspath(folder)
    checker.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def build_tiny_controlnet_union(pipe_folder: str | os.PathLike, folder: str | os.PathLike, seed: int = 0) -> str:
    """Save a ControlNetUnionModel (xinsir's SDXL ControlNet Union, all 8 control modes like its promax
    weights) made for a saved tiny SDXL pipeline's UNet to ``folder``: internal widths follow the UNet's
    first block, and its zero layers are random so that every control image steers (as in
    ``build_tiny_controlnet``)."""
    from diffusers import ControlNetUnionModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(os.fspath(pipe_folder), subfolder="unet")
    width = unet.config.block_out_channels[0]
    base = ControlNetUnionModel.from_unet(unet, conditioning_embedding_out_channels=(4, 4, 4, 4))
    torch.manual_seed(seed)
    controlnet = ControlNetUnionModel.from_config(base.config, num_trans_channel=width, num_proj_channel=width,
                                                  num_trans_head=2, num_control_type=8)
    embedding = controlnet.controlnet_cond_embedding
    with torch.no_grad():
        for conv, std in [*((c, 0.5) for c in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]),
                          *((c, 0.4) for c in [embedding.conv_in, *embedding.blocks, embedding.conv_out]),
                          (controlnet.spatial_ch_projs, 0.2)]:
            conv.weight.normal_(0.0, std)
            conv.bias.zero_()
    controlnet.save_pretrained(os.fspath(folder))
    return os.fspath(folder)
