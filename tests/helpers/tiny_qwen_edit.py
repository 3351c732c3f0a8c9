"""Tiny random-weight Qwen-Image-Edit and Qwen-Image-Edit-Plus folders for tests, built offline.

``build_tiny_qwen_image_edit(folder, plus=False)`` saves a ``QwenImageEditPipeline`` (``plus``: a
``QwenImageEditPlusPipeline``) with tiny_2026_models.py's Qwen-Image transformer, VAE and scheduler, and a tiny
Qwen2.5-VL whose vision tower reads the pictures: its tokenizer is ``vision_tokenizer()`` (the chat tokenizer with
the vision tokens), and ``processor/`` holds that tokenizer with a small Qwen2-VL image processor (pictures of at
most 112² px, 16 image tokens). model_index.json names the processor ``Qwen2VLProcessor``, as released folders do.
"""

from __future__ import annotations

import json
import os
import shutil

import torch

from helpers.tiny_2026_models import _qwen25_vl, build_tiny_qwen_image, chat_tokenizer

__all__ = ["build_tiny_qwen_image_edit", "vision_tokenizer"]

#: the Qwen2.5-VL config's token id fields and their tokens
VISION_TOKENS = {"vision_start": "<|vision_start|>", "vision_end": "<|vision_end|>", "image": "<|image_pad|>",
                 "video": "<|video_pad|>"}


def vision_tokenizer():
    """The chat tokenizer with Qwen2-VL's vision tokens added (special tokens, appended to the vocabulary)."""
    tok = chat_tokenizer()
    tok.add_tokens(list(VISION_TOKENS.values()), special_tokens=True)
    return tok


def build_tiny_qwen_image_edit(folder: str | os.PathLike, *, plus: bool = False) -> str:
    """Save a tiny Qwen-Image-Edit folder (``plus``: Qwen-Image-Edit-Plus) with its ``processor/``."""
    from diffusers import QwenImageEditPipeline, QwenImageEditPlusPipeline, QwenImagePipeline
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    folder = os.fspath(folder)
    base = QwenImagePipeline.from_pretrained(build_tiny_qwen_image(folder + ".t2i"), dtype=torch.float32)
    tok = vision_tokenizer()
    ids = {f"{name}_token_id": tok.convert_tokens_to_ids(token) for name, token in VISION_TOKENS.items()}
    cls = QwenImageEditPlusPipeline if plus else QwenImageEditPipeline
    pipe = cls(scheduler=base.scheduler, vae=base.vae, text_encoder=_qwen25_vl(len(tok), **ids), tokenizer=tok,
               processor=None, transformer=base.transformer)
    pipe.save_pretrained(folder)
    shutil.rmtree(folder + ".t2i")
    processor = os.path.join(folder, "processor")
    Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112).save_pretrained(processor)
    tok.save_pretrained(processor)
    index_path = os.path.join(folder, "model_index.json")
    with open(index_path, encoding="utf-8") as f:
        index = json.load(f)
    index["processor"] = ["transformers", "Qwen2VLProcessor"]
    with open(index_path, "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2)
    return folder
