"""Regional prompts (a request's ``regions``): each region's prompt acts only where its mask is white.

The base prompt and each region's prompt (the base text + ", " + the region's, as krita-ai-diffusion adds
its root prompt to every region) are encoded with the pipeline's own ``encode_prompt`` and concatenated
along the token axis, one block of tokens per prompt: base first, then the regions in order. The negative
side has the same layout (base negative; base negative + ", " + a region's own), so classifier-free
guidance pairs block with block. SDXL's pooled embeddings are the base prompt's.

For the job's pipeline call, ``RegionalAttention`` wraps every cross-attention processor (``attn2``) of the
UNet: it attends to each block on its own (through the original processor) and blends the outputs per
query pixel with the masks resized to that attention map (1/8, 1/16, 1/32 … of the picture): a region's
block weighs its (soft) mask value, overlapping regions share (their weights scaled to sum 1), and the
base block takes what the regions leave, so where no region covers the picture the base prompt acts
alone. ``applied`` restores the original processors afterwards: jobs without regions are untouched
(the UNet is shared by every pipeline of the model, ``from_pipe``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .types import EngineError, EngineJob


def joined(base: str, extra: str) -> str:
    """A region's text: the base text, ", ", the region's (either alone when the other is empty)."""
    return ", ".join(t for t in (base.strip(), extra.strip()) if t)


def job_masks(job: EngineJob) -> torch.Tensor | None:
    """The job's region masks as one (regions, height, width) float tensor in 0..1 (white = 1), from its
    attachments at the job's size (RGB over black: gray values or alpha); None without regions."""
    if not job.regions:
        return None
    out = []
    for i, region in enumerate(job.regions):
        image = job.attached.get(region.mask)
        if image is None or image.size != (job.width, job.height):
            got = "none" if image is None else f"{image.width}x{image.height}"
            raise EngineError(f"region {i + 1} needs its mask {region.mask!r} at the job's size {job.width}x"
                              f"{job.height} (got {got})", field=f"regions[{i}].mask")
        out.append(torch.from_numpy(np.asarray(image.convert("L"), dtype=np.float32) / 255.0))
    return torch.stack(out)


class RegionMasks:
    """Blend weights of the token blocks (base, then each region) per query pixel, at any attention map's
    resolution (cached per size)."""

    def __init__(self, masks: torch.Tensor, block: int):
        self.masks = masks.float()  # (R, H, W) at picture or latent size
        self.block = block  # tokens per prompt block
        self.tokens = block * (len(masks) + 1)
        self._cache: dict[tuple[int, torch.device, torch.dtype], tuple[torch.Tensor, list[int]]] = {}

    def map_size(self, n: int) -> tuple[int, int]:
        """(h, w) of an attention map of ``n`` query pixels: the masks' size halved (rounding up, as the
        UNet's strided convolutions do) until it has ``n`` pixels."""
        h, w = self.masks.shape[1:]
        while h * w > n:
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        if h * w != n:
            raise EngineError(f"regions: an attention map of {n} pixels is no scale of the {w}x{h} masks")
        return h, w

    def weights(self, n: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, list[int]]:
        """(blocks, n) weights summing to 1 at each of the map's ``n`` pixels (row-major), and the blocks
        with any weight there (the others need no attention at this size)."""
        key = (n, device, dtype)
        if key not in self._cache:
            h, w = self.map_size(n)
            small = self.masks
            if small.shape[1:] != (h, w):
                small = F.interpolate(small[None], size=(h, w), mode="bilinear", antialias=True,
                                      align_corners=False)[0].clamp(0, 1)
            regions = small.reshape(len(small), n)
            total = regions.sum(0)
            regions = regions / total.clamp(min=1.0)  # overlaps share, never more than the whole
            base = (1.0 - total).clamp(min=0.0)
            weights = torch.cat([base[None], regions])
            active = [b for b in range(len(weights)) if bool(weights[b].any())]
            self._cache[key] = weights.to(device=device, dtype=dtype), active
        return self._cache[key]


class RegionalAttention(torch.nn.Module):
    """A cross-attention processor: the ``original`` one per token block, blended by ``masks``' weights.

    Other calls (self-attention, another token count) go to the original processor unchanged."""

    def __init__(self, original: Any, masks: RegionMasks):
        super().__init__()
        self.original = original
        self.masks = masks

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: Any = None,
                 attention_mask: Any = None, ip_adapter_masks: Any = None, **kwargs: Any) -> torch.Tensor:
        # named so that diffusers' Attention passes a reference's masks on (it drops what the call does not name)
        if ip_adapter_masks is not None:
            kwargs["ip_adapter_masks"] = ip_adapter_masks
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, **kwargs)

    def forward(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: Any = None,
                attention_mask: Any = None, **kwargs: Any) -> torch.Tensor:
        text = encoder_hidden_states[0] if isinstance(encoder_hidden_states, tuple) else encoder_hidden_states
        if text is None or text.shape[1] != self.masks.tokens:
            return self.original(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                                 attention_mask=attention_mask, **kwargs)
        spatial = hidden_states.ndim == 4  # (B, C, H, W) in, (B, C, H, W) out
        n = hidden_states.shape[2] * hidden_states.shape[3] if spatial else hidden_states.shape[1]
        weights, active = self.masks.weights(n, hidden_states.device, hidden_states.dtype)
        out = None
        for b in active:
            w = weights[b]
            part = text[:, b * self.masks.block:(b + 1) * self.masks.block]
            states = (part, *encoder_hidden_states[1:]) if isinstance(encoder_hidden_states, tuple) else part
            o = self.original(attn, hidden_states, encoder_hidden_states=states, attention_mask=attention_mask, **kwargs)
            o = o * (w.view(1, 1, *o.shape[2:]) if spatial else w.view(1, n, 1))
            out = o if out is None else out + o
        assert out is not None  # the weights sum to 1 at every pixel
        return out


def cross_attentions(unet: Any) -> list[Any]:
    """The UNet's cross-attention modules (``attn2`` of its transformer blocks)."""
    return [m for name, m in unet.named_modules() if name.endswith("attn2") and hasattr(m, "set_processor")]


@contextmanager
def applied(pipe: Any, masks: RegionMasks | None) -> Iterator[None]:
    """``RegionalAttention`` on ``pipe``'s UNet for the duration (nothing without ``masks``); the original
    processors are put back however it ends."""
    if masks is None:
        yield
        return
    modules = cross_attentions(pipe.unet)
    originals = [m.processor for m in modules]
    try:
        for module, original in zip(modules, originals):
            module.set_processor(RegionalAttention(original, masks))
        yield
    finally:
        for module, original in zip(modules, originals):
            module.set_processor(original)


def encode(pipe: Any, job: EngineJob, masks: torch.Tensor) -> tuple[dict[str, Any], RegionMasks]:
    """The pipeline call's prompt arguments (the blocks' embeddings, concatenated; ``prompt`` and
    ``negative_prompt`` None) and the masks' blend weights."""
    regions = job.regions or []
    texts = [job.prompt] + [joined(job.prompt, r.prompt) for r in regions]
    negatives = [job.negative_prompt] + [joined(job.negative_prompt, r.negative_prompt) for r in regions]
    device = getattr(pipe, "_execution_device", None) or pipe.device
    common = {"device": device, "num_images_per_prompt": 1, "do_classifier_free_guidance": True}
    xl = hasattr(pipe, "text_encoder_2")
    encoded = pipe.encode_prompt(prompt=texts, negative_prompt=negatives, **common)
    positive, negative_embeds = encoded[0], encoded[1]
    zeros = xl and pipe.config.get("force_zeros_for_empty_prompt", False)
    if zeros:  # SDXL's empty negatives are zeros, as the pipeline makes them for an empty negative prompt
        empty = torch.tensor([not n for n in negatives], device=negative_embeds.device)
        negative_embeds = torch.where(empty[:, None, None], torch.zeros_like(negative_embeds), negative_embeds)

    def flat(embeds: torch.Tensor) -> torch.Tensor:
        return embeds.reshape(1, -1, embeds.shape[-1])

    kwargs: dict[str, Any] = {"prompt": None, "negative_prompt": None, "prompt_embeds": flat(positive),
                              "negative_prompt_embeds": flat(negative_embeds)}
    if xl:
        pooled = encoded[3][:1]
        kwargs.update(pooled_prompt_embeds=encoded[2][:1],
                      negative_pooled_prompt_embeds=torch.zeros_like(pooled) if zeros and not negatives[0] else pooled)
    return kwargs, RegionMasks(masks, positive.shape[1])
