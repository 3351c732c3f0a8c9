"""Transformer-only files of the flow-matching families, told apart by tensor names and shapes alone (pure,
as detect.py): FLUX.1, Chroma, Z-Image, Qwen-Image and FLUX.2 Klein, in the original (BFL, Tongyi, Qwen) or
diffusers key layout, bare or under ComfyUI's ``model.diffusion_model.``, as ``.safetensors`` or GGUF.

The cues are the names diffusers' single-file loaders use (``loaders/single_file_utils.py``:
``CHECKPOINT_KEY_NAMES`` and the ``convert_*_transformer_checkpoint_to_diffusers`` renames) and the diffusers
model classes' own: FLUX.2's shared per-stream modulations, Chroma's distilled guidance approximator in
place of FLUX.1's per-block modulations, Z-Image's adaLN layers and caption embedder, Qwen-Image's per-stream
``img_mod``/``txt_norm``. Such a file holds only the transformer: the text encoders and VAE come from a
diffusers folder of the same model (its *base folder*), ``FILE#config=FOLDER`` or found by scan.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..families import Family
from .header import Tensors

PREFIXES = ("", "model.diffusion_model.")  # bare, or ComfyUI's prefix


@dataclass(frozen=True)
class _Cue:
    family: Family
    names: tuple[str, ...]  # all present: this family's transformer in one layout
    text: str  # the text-embedding projection: its input width is the text encoder's
    image: str  # the patch embedding: its input width says the latent channels (FLUX.1 Fill: more)
    others: tuple[tuple[str, str], ...] = ()  # (name, what it is): a relative Easel does not serve


_FLUX2_DEV = "a FLUX.2 [dev] transformer (it embeds guidance; FLUX.2 Klein's do not)"
_CUES = (  # FLUX.2 before FLUX.1 and Chroma (all three name double and single blocks)
    _Cue(Family.FLUX2_KLEIN, ("single_stream_modulation.lin.weight", "double_stream_modulation_img.lin.weight"),
         "txt_in.weight", "img_in.weight", (("guidance_in.in_layer.weight", _FLUX2_DEV),)),
    _Cue(Family.FLUX2_KLEIN, ("single_stream_modulation.linear.weight", "double_stream_modulation_img.linear.weight"),
         "context_embedder.weight", "x_embedder.weight",
         (("time_guidance_embed.guidance_embedder.linear_1.weight", _FLUX2_DEV),)),
    _Cue(Family.CHROMA, ("distilled_guidance_layer.in_proj.bias", "double_blocks.0.img_attn.qkv.weight"),
         "txt_in.weight", "img_in.weight"),
    _Cue(Family.CHROMA, ("distilled_guidance_layer.in_proj.bias", "transformer_blocks.0.attn.to_q.weight"),
         "context_embedder.weight", "x_embedder.weight"),
    _Cue(Family.FLUX, ("double_blocks.0.img_mod.lin.weight", "single_blocks.0.modulation.lin.weight"),
         "txt_in.weight", "img_in.weight"),
    _Cue(Family.FLUX, ("transformer_blocks.0.norm1.linear.weight", "single_transformer_blocks.0.norm.linear.weight"),
         "context_embedder.weight", "x_embedder.weight"),
    _Cue(Family.Z_IMAGE, ("layers.0.adaLN_modulation.0.weight", "cap_embedder.1.weight", "x_embedder.weight"),
         "cap_embedder.1.weight", "x_embedder.weight"),
    _Cue(Family.Z_IMAGE, ("layers.0.adaLN_modulation.0.weight", "cap_embedder.1.weight"),
         "cap_embedder.1.weight", "all_x_embedder.2-1.weight"),
    _Cue(Family.QWEN_IMAGE, ("transformer_blocks.0.img_mod.1.weight", "transformer_blocks.0.txt_mod.1.weight"),
         "txt_in.weight", "img_in.weight", (("txt_in.text_norm.weight", "a Qwen-Image 2.1 transformer"),)),
)
#: the families whose transformer files Easel recognises, in the order of its docs
FAMILIES = tuple(dict.fromkeys(cue.family for cue in sorted(_CUES, key=lambda c: list(Family).index(c.family))))


@dataclass(frozen=True)
class Transformer:
    """What a transformer file's header says: its family, the text encoder's width it takes (``context``),
    an inpainting transformer (FLUX.1 Fill: image latents plus the masked image's and the mask's), or
    ``problem``: the relative Easel does not serve that it is."""

    family: Family
    context: int | None
    inpaint: bool = False
    problem: str | None = None


def find_transformer(tensors: Tensors) -> Transformer | None:
    """The flow-family transformer ``tensors`` hold (None: not one of those)."""
    for prefix in PREFIXES:
        for cue in _CUES:
            if not all(prefix + name in tensors for name in cue.names):
                continue
            for name, what in cue.others:
                if prefix + name in tensors:
                    return Transformer(cue.family, None, problem=what)
            image = _in_width(tensors, prefix + cue.image)
            inpaint = cue.family is Family.FLUX and image is not None and image > 4 * Family.FLUX.latent_channels
            return Transformer(cue.family, _in_width(tensors, prefix + cue.text), inpaint)
    return None


def _in_width(tensors: Tensors, name: str) -> int | None:
    info = tensors.get(name)
    return int(info.shape[-1]) if info is not None and len(info.shape) == 2 else None
