"""What a weights file is, from its tensor names and shapes alone (pure: no I/O, no torch).

``describe(tensors)`` tells a checkpoint (original "ldm" layout: ``model.diffusion_model.*`` plus
text encoders and VAE), a LoRA, a ControlNet or a VAE apart, and for checkpoints the family
(``sd1``, ``sd2``, ``sdxl``, ``sdxl-refiner``), inpainting (a 9-channel UNet) and whether the sizes
are exactly those of a real architecture Easel ships a config for (``arch``). The cues are the
ones diffusers and ComfyUI use: the UNet's input channels and model channels, the cross-attention
width (768 CLIP-L, 1024 OpenCLIP-H, 2048 CLIP-L+bigG, 1280 bigG), the SDXL ``label_emb`` width
(2816 base, 2560 refiner) and which text encoders are present. ControlNets (original or diffusers
layout) get their family the same way and ``arch`` when they have the sizes of a shipped ControlNet config.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ..families import Family
from .configs import CONFIGS, CONTROL_CONFIGS
from .flow_files import FAMILIES, find_transformer
from .header import Tensors

UNET = "model.diffusion_model."
# LoRAs of the flow-matching transformers, by their block names (diffusers/PEFT, kohya and original layouts):
# Flux has double and single blocks, SD3 joint blocks only.
_Z_IMAGE_LORA = re.compile(r'"[^"]*(noise_refiner|context_refiner)[._]')  # Z-Image's refiner blocks
_QWEN_IMAGE_LORA = re.compile(r'"[^"]*(img_mlp|txt_mlp|img_mod|txt_mod)[._]')  # Qwen-Image's per-stream blocks
_FLUX2_LORA = re.compile(r'"[^"]*(to_qkv_mlp_proj|ff(?:_context)?[._]linear_(?:in|out))[._]')  # FLUX.2 blocks
_FLUX_LORA = re.compile(r'"[^"]*(single_transformer_blocks|double_blocks|single_blocks)[._]')
_SD3_LORA = re.compile(r'"[^"]*(joint_blocks|transformer[._]transformer_blocks)[._]')
# exact (name, shape) probes per shipped architecture: present with these shapes = that architecture
_PROBES: dict[Family, dict[str, tuple[int, ...]]] = {
    Family.SD1: {"input_blocks.0.0.weight": (320, 4, 3, 3), "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
            "input_blocks.1.1.proj_in.weight": (320, 320, 1, 1), "middle_block.1.transformer_blocks.0.attn2.to_k.weight": (1280, 768),
            "output_blocks.11.1.transformer_blocks.0.attn2.to_k.weight": (320, 768)},
    Family.SD2: {"input_blocks.0.0.weight": (320, 4, 3, 3), "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024),
            "input_blocks.1.1.proj_in.weight": (320, 320), "middle_block.1.transformer_blocks.0.attn2.to_k.weight": (1280, 1024),
            "output_blocks.11.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024)},
    Family.SDXL: {"input_blocks.0.0.weight": (320, 4, 3, 3), "label_emb.0.0.weight": (1280, 2816),
             "input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight": (640, 2048),
             "input_blocks.7.1.transformer_blocks.9.attn2.to_k.weight": (1280, 2048),
             "output_blocks.8.0.skip_connection.weight": (320, 640, 1, 1)},
    Family.SDXL_REFINER: {"input_blocks.0.0.weight": (384, 4, 3, 3), "label_emb.0.0.weight": (1536, 2560),
                     "input_blocks.4.1.transformer_blocks.3.attn2.to_k.weight": (768, 1280),
                     "output_blocks.11.0.skip_connection.weight": (384, 768, 1, 1)},
}
# a ControlNet's hint encoder (3 -> 16 ... 256 -> the UNet's 320 channels), original-layout names
_HINT = {"input_hint_block.0.weight": (16, 3, 3, 3), "input_hint_block.14.weight": (320, 256, 3, 3)}
_UNION = {"spatial_ch_projs.weight": (320, 320)}  # xinsir's ControlNet Union (diffusers layout only)
_FLOW_CONTROL = {"double_blocks.": Family.FLUX, "joint_blocks.": Family.SD3}  # XLabs-style files of their blocks
# original-layout names -> diffusers names, for the probes (every real ControlNet has 2 layers per block)
_DIFFUSERS = [(re.compile(r"input_blocks\.0\.0\."), "conv_in."), (re.compile(r"middle_block\.1\."), "mid_block.attentions.0."),
              (re.compile(r"label_emb\.0\.0\."), "add_embedding.linear_1."),
              (re.compile(r"input_hint_block\.0\."), "controlnet_cond_embedding.conv_in."),
              (re.compile(r"input_hint_block\.14\."), "controlnet_cond_embedding.conv_out.")]
_TEXT = {  # family -> token-embedding tensors (either spelling) and their widths
    Family.SD1: [(("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
              "cond_stage_model.transformer.embeddings.token_embedding.weight"), 768)],
    Family.SD2: [(("cond_stage_model.model.token_embedding.weight",), 1024)],
    Family.SDXL: [(("conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
               "conditioner.embedders.0.transformer.embeddings.token_embedding.weight"), 768),
             (("conditioner.embedders.1.model.token_embedding.weight",), 1280)],
    Family.SDXL_REFINER: [(("conditioner.embedders.0.model.token_embedding.weight",), 1280)],
}
_FLOW_FILE = ("{} single file: serve it as 'FILE#config=FOLDER', FOLDER a diffusers folder of the same {} "
              "model for the text encoders and VAE (docs/models.md)")
_OTHER = [  # (key fragment, what it is) for files Easel does not serve
    ("joint_blocks.", _FLOW_FILE.format("an SD 3/3.5", "SD 3/3.5")), ("double_blocks.", _FLOW_FILE.format("a FLUX.1", "FLUX.1")),
    ("time_stack.", "a video model (SVD)"), ("motion_modules.", "an AnimateDiff motion module"),
    ("emb_params", "a textual-inversion embedding"), ("string_to_param", "a textual-inversion embedding"),
    ("image_proj.", "an IP-Adapter"), ("ip_adapter.", "an IP-Adapter"), ("adapter.body.", "a T2I-Adapter"),
    ("vision_model.", "a CLIP vision model"),
    ("edm_mean", "an EDM model (Playground v2.5)"), ("lora_controlnet", "a Control-LoRA"),
]


def _listed(families: Iterable[Family]) -> str:
    """Their labels as ``SD 1.x, SD 2.x and SDXL``."""
    labels = list(dict.fromkeys(family.label for family in families))
    return " and ".join(part for part in (", ".join(labels[:-1]), labels[-1]) if part)


# The single files Easel serves: those of the served families it ships configs for; the flow models' with a folder.
_SERVED_FILES = (f"Easel serves {_listed(family for family, _ in CONFIGS.values() if family.served)} single files, "
                 f"and {_listed(f for f in Family if f.flow and f.served and f.single_files)} ones with a config folder")

# Names are searched in one text where each appears as "name":{ (a safetensors header's own layout), so
# a regular expression runs once per file at C speed instead of once per name.
_LORA = re.compile(r'(\.lora_(down|up|A|B)\.weight|\.hada_w1_[ab]|\.lokr_w[12]|_lora\.(down|up)\.weight|\.alpha)":\{')
_LORA_CROSS = re.compile(r'"([^"]*attn2[._]to_[kv][^"]*(?:down\.weight|lora_A\.weight|w1_b))":\{')
_SDXL_TEXT = re.compile(r'"(?:lora_te2_|text_encoder_2\.|te2\.)')
_DEPTH = re.compile(r'transformer_blocks[._][1-9]')
# upscalers (ESRGAN & co.): the first convolution of ESRGAN/SwinIR/HAT/DAT …, old-style ESRGAN and Real-ESRGAN
# compact files; in a flat folder only (in an upscaler folder the folder says what its files are)
_UPSCALER = re.compile(r'"(conv_first|model\.0|body\.0)\.weight":\{')
#: the problem of a file of none of the kinds Easel knows
UNRECOGNISED = "unknown contents (not an SD checkpoint, LoRA, ControlNet or VAE)"
_CONTROL = re.compile(r'"([^"]*?)(input_hint_block\.0\.weight|controlnet_cond_embedding\.conv_in\.weight)":\{')


@dataclass(frozen=True)
class Description:
    """One file's kind, family and sizes; ``problem`` (plain words) when Easel cannot use it."""

    kind: str  # "checkpoint" | "lora" | "controlnet" | "vae" | "upscaler" | "base" (flow_files.py) | "unknown"
    family: Family | None = None  # checkpoints: SD1, SD2, SDXL, SDXL_REFINER; None: unknown
    inpaint: bool = False
    arch: str | None = None  # the shipped config that fits exactly (configs.CONFIGS), else None
    native: int | None = None  # native size in px, when known
    context: int | None = None  # cross-attention width (LoRAs and ControlNets must match the model's)
    prediction: str | None = None  # "v"/"v-ztsnr" when the file says so (v_pred/ztsnr keys, SD 2.x 768 heuristic)
    problem: str | None = None
    control_types: int | None = None  # a ControlNet Union's number of control types (its control_mode range)
    quant: str | None = None  # a GGUF transformer's quantisation (its linear weights' GGML type: Q8_0, Q4_K …)
    transformer: bool = False  # a flow family's transformer alone (flow_files.py): served with a base folder

    def __post_init__(self) -> None:
        if self.family is not None:
            object.__setattr__(self, "family", Family(self.family))  # a plain "sdxl" becomes Family.SDXL

    @property
    def label(self) -> str:
        """``SD 1.x inpainting``, ``SDXL LoRA``, ``unknown VAE`` …"""
        family = self.family.label if self.family else ""
        if self.transformer:
            inpainting = " inpainting" if self.inpaint else ""  # FLUX.1 Fill's
            return f"{family or 'unknown'}{inpainting} transformer" + (f" (GGUF {self.quant})" if self.quant else "")
        kind = {"checkpoint": "", "lora": "LoRA", "controlnet": "ControlNet", "vae": "VAE",
                "upscaler": "upscaler", "base": "base folder"}.get(self.kind, "file")
        parts = [family or ("unknown" if self.kind in ("checkpoint", "unknown") else ""),
                 "inpainting" if self.inpaint else "", kind]
        return " ".join(p for p in parts if p) or "unknown"


def names_text(tensors: Tensors) -> str:
    """All names as one text, each as ``"name":{`` (a header's own text when the reader kept it)."""
    text = getattr(tensors, "names_text", None)
    return text if isinstance(text, str) else "".join(f'"{k}":{{' for k in tensors)


def describe(tensors: Tensors, v_prediction: bool | None = None) -> Description:
    """Describe a file from its tensors; ``v_prediction``: what the caller measured for SD 2.x (or None)."""
    names = names_text(tensors)
    if UNET + "input_blocks.0.0.weight" in tensors:
        return describe_checkpoint(tensors, v_prediction, names)
    if _LORA.search(names):
        return describe_lora(tensors, names)
    if _CONTROL.search(names):
        return describe_controlnet(tensors, names)
    flow = describe_transformer(tensors)
    if flow is not None:
        return flow
    vae = _vae_prefix(tensors)
    if vae is not None:
        return describe_vae(tensors, vae)
    if _UPSCALER.search(names) and not any(fragment in names for fragment, _ in _OTHER):
        return Description("upscaler")
    return Description("unknown", problem=_unknown(names, len(tensors)))


def describe_gguf(tensors: Tensors, architecture: str) -> Description:
    """A GGUF file (``architecture``: its ``general.architecture``): a flow family's transformer (flow_files.py)
    with its quantisation; anything else is not Easel's."""
    quant = _most_common(info.dtype for name in tensors if len((info := tensors[name]).shape) == 2)
    found = describe_transformer(tensors, quant)
    if found is not None:
        return found
    what = f"a GGUF {architecture or 'unknown'} model ({quant})"
    return Description("unknown", problem=f"{what}, which Easel does not use (it serves GGUF transformers of "
                       f"{_listed(FAMILIES)})")


def describe_transformer(tensors: Tensors, quant: str | None = None) -> Description | None:
    """A flow family's transformer-only file (None: not one); ``quant``: a GGUF file's quantisation."""
    found = find_transformer(tensors)
    if found is None:
        return None
    problem = f"{found.problem}; Easel serves transformer files of {_listed(FAMILIES)}" if found.problem else None
    return Description("checkpoint", found.family, found.inpaint, native=found.family.native, context=found.context,
                       problem=problem, quant=quant, transformer=True)


def _most_common(values: Iterable[str]) -> str | None:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return max(counts, key=lambda v: counts[v]) if counts else None


def describe_checkpoint(tensors: Tensors, v_prediction: bool | None = None, names: str | None = None) -> Description:
    names = names if names is not None else names_text(tensors)
    conv_in = tensors[UNET + "input_blocks.0.0.weight"].shape
    channels = conv_in[1] if len(conv_in) == 4 else 0
    context = _context(tensors, UNET, names)
    label = tensors.get(UNET + "label_emb.0.0.weight")
    for fragment, what in _OTHER:
        if fragment in names:
            return Description("checkpoint", problem=what if "single file" in what else f"{what}; {_SERVED_FILES}")
    if label is not None:
        refiner = context == Family.SDXL_REFINER.context or label.shape[1] == 2560 or _has_text(
            tensors, Family.SDXL_REFINER)
        family = Family.SDXL_REFINER if refiner else Family.SDXL
    elif context == Family.SD2.context or _has_text(tensors, Family.SD2):
        family = Family.SD2
    elif context == Family.SD1.context or _has_text(tensors, Family.SD1):
        family = Family.SD1
    else:
        return Description("checkpoint", context=context, problem=f"unknown architecture (cross-attention width "
                           f"{context}, no known text encoder); {_SERVED_FILES}")
    inpaint = channels == 9
    if channels not in (4, 9):
        what = "an InstructPix2Pix model" if channels == 8 else f"a UNet with {channels} input channels"
        return Description("checkpoint", family, context=context,
                           problem=f"{what}; Easel serves text-to-image and 9-channel inpainting models")
    prediction = "v" if "v_pred" in tensors or (family.mixes_prediction and not inpaint and v_prediction) else None
    if prediction == "v" and "ztsnr" in tensors:
        prediction = "v-ztsnr"  # v-prediction trained with zero terminal SNR (some SDXL models mark both)
    arch = _arch(tensors, family, inpaint, prediction)
    missing = [part for part, ok in (("text encoder", _has_text(tensors, family)),
                                     ("VAE", "first_stage_model.decoder.conv_out.weight" in tensors)) if not ok]
    problem = None
    if missing:
        problem = (f"it has no {' or '.join(missing)} (a UNet-only file); use a full checkpoint that includes "
                   "them, or its diffusers folder")
    native = CONFIGS[arch][1] if arch else family.native_for(v_prediction=prediction is not None)
    return Description("checkpoint", family, inpaint, arch, native, context, prediction, problem)


def _arch(tensors: Tensors, family: Family, inpaint: bool, prediction: str | None) -> str | None:
    """The shipped architecture whose probe shapes the file has exactly (inpainting: 9 input channels)."""
    for name, shape in _PROBES[family].items():
        if name == "input_blocks.0.0.weight":
            shape = (shape[0], 9 if inpaint else 4, *shape[2:])
        found = tensors.get(UNET + name)
        if found is None or found.shape != shape:
            return None
    for names, width in _TEXT[family]:
        present = [tensors[n] for n in names if n in tensors]
        if present and present[0].shape[-1] != width:
            return None
    if inpaint:
        return f"{family}-inpaint" if f"{family}-inpaint" in CONFIGS else None
    if prediction and f"{family}-v" in CONFIGS:
        return f"{family}-v"
    return family.value


def _has_text(tensors: Tensors, family: Family) -> bool:
    return all(any(n in tensors for n in names) for names, _ in _TEXT[family])


def _context(tensors: Tensors, prefix: str, names: str) -> int | None:
    """The cross-attention width: the input size of the first ``attn2.to_k`` under ``prefix``."""
    match = re.search('"(' + re.escape(prefix) + r'[^"]*attn2\.to_k\.weight)":\{', names)
    if match is None:
        return None
    shape = tensors[match.group(1)].shape
    return shape[1] if len(shape) == 2 else None


def describe_lora(tensors: Tensors, names: str | None = None) -> Description:
    """A LoRA (kohya, diffusers/PEFT, LyCORIS LoHa): family from its cross-attention width or structure."""
    names = names if names is not None else names_text(tensors)
    if _FLUX2_LORA.search(names):  # before FLUX.1's: both name single_transformer_blocks
        return Description("lora", Family.FLUX2_KLEIN)
    if _FLUX_LORA.search(names):
        return Description("lora", Family.FLUX)
    if _QWEN_IMAGE_LORA.search(names):  # before SD3's: both name diffusers' transformer_blocks
        return Description("lora", Family.QWEN_IMAGE)
    if _SD3_LORA.search(names):
        return Description("lora", Family.SD3)
    if _Z_IMAGE_LORA.search(names):
        return Description("lora", Family.Z_IMAGE)
    context = None
    match = _LORA_CROSS.search(names)
    if match is not None:
        shape = tensors[match.group(1)].shape
        context = shape[1] if len(shape) == 2 else None
    family = Family.of_context(context)
    if family is None and _SDXL_TEXT.search(names):
        family = Family.SDXL
    if family is None and _DEPTH.search(names):
        family = Family.SDXL  # only SDXL stacks several transformer blocks per attention
    return Description("lora", family, context=context)


def describe_controlnet(tensors: Tensors, names: str | None = None) -> Description:
    """A ControlNet single file (original or diffusers layout; a ControlNet Union by its task embedding)."""
    names = names if names is not None else names_text(tensors)
    for fragment, flow in _FLOW_CONTROL.items():
        if fragment in names:
            return Description("controlnet", flow, problem=f"a {flow.label} ControlNet single file; Easel loads "
                               f"{flow.label} ControlNets from their diffusers folders (config.json + weights)")
    for fragment, what in _OTHER:
        if fragment in names:
            return Description("controlnet", problem=f"{what}, which Easel does not use")
    match = _CONTROL.search(names)
    prefix, ldm = (match.group(1), match.group(2).startswith("input_hint")) if match else ("", False)
    context = _context(tensors, prefix, names)
    xl = bool(re.search(r'(label_emb\.0\.0\.weight|add_embedding\.linear_1\.weight)":\{', names))
    family = Family.SDXL if xl else Family.of_context(context)
    task = tensors.get(prefix + "task_embedding")
    types = task.shape[0] if task is not None and len(task.shape) == 2 else None
    arch = _control_arch(tensors, family, prefix, ldm, types is not None)
    return Description("controlnet", family, arch=arch, context=context, control_types=types)


def _control_arch(tensors: Tensors, family: Family | None, prefix: str, ldm: bool, union: bool) -> str | None:
    """The shipped ControlNet config whose probe shapes (the UNet's input side, the hint encoder) the file has."""
    name = f"controlnet-{'union-' if union else ''}{family.value if family else ''}"
    if family is None or name not in CONTROL_CONFIGS:
        return None
    probes = {**{k: v for k, v in _PROBES[family].items() if not k.startswith("output_blocks")}, **_HINT,
              **(_UNION if union else {})}
    for probe, shape in probes.items():
        found = tensors.get(prefix + (probe if ldm else _diffusers_name(probe)))
        if found is None or found.shape != shape:
            return None
    return name


def _diffusers_name(name: str) -> str:
    """A UNet-side probe's name in a diffusers-layout ControlNet."""
    block = re.match(r"input_blocks\.(\d+)\.1\.(.*)", name)
    if block:
        n = int(block.group(1)) - 1
        return f"down_blocks.{n // 3}.attentions.{n % 3}.{block.group(2)}"
    for old, new in _DIFFUSERS:
        if old.match(name):
            return old.sub(new, name, count=1)
    return name


def _vae_prefix(tensors: Tensors) -> str | None:
    for prefix in ("", "first_stage_model.", "vae."):
        if prefix + "encoder.conv_in.weight" in tensors and prefix + "decoder.conv_out.weight" in tensors:
            return prefix
    return None


def describe_vae(tensors: Tensors, prefix: str) -> Description:
    latent = tensors.get(prefix + "decoder.conv_in.weight")
    channels = latent.shape[1] if latent is not None and len(latent.shape) == 4 else None
    problem = None if channels == 4 else (f"a VAE with {channels} latent channels (SD3/Flux-style); Easel's models "
                                          "use 4")
    return Description("vae", problem=problem)


def _unknown(names: str, count: int) -> str:
    for fragment, what in _OTHER:
        if fragment in names:
            return what if "single file" in what else f"{what}, which Easel does not use"
    if not count:
        return "it holds no tensors"
    return UNRECOGNISED


def fits(lora: Description, context: int | None, family: Family | None) -> bool:
    """Whether a LoRA (or ControlNet) fits a model with this cross-attention width and family."""
    if lora.context is not None and context is not None:
        return lora.context == context
    if lora.family is not None and family is not None:
        return lora.family in Family(family).lora_families
    return True
