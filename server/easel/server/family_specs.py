"""The table behind ``Family``: each family's label, native size, defaults, pipelines, controls and other
traits (``Spec``), its tiny VAE and whether ``--openvino`` converts it. families.py's properties read it;
everything else asks ``Family``.
"""

from __future__ import annotations

from dataclasses import dataclass

MODES = ("txt2img", "img2img", "inpaint")
#: The control kinds a request's ``control_model`` can be (a sketch ControlNet: scribble, line art, canny).
SKETCH = "sketch"
#: Control layers (a request's ``controls``): ControlNets of every kind the server holds for the family.
LAYERS = "layers"
#: Reference layers (``controls`` of a reference kind): IP-Adapters of the family the server holds (FLUX.1: Redux).
REFERENCES = "references"
# (steps, guidance) per variant. Few-step SD/SDXL variants: turbo (1 step, no CFG), lightning (4 steps,
# no CFG), lcm (4 steps, guidance 1; 8 when the UNet embeds guidance). Flow-matching models, as their
# model cards recommend: SD 3.5 large 28 / 3.5, SD 3.5 medium 40 / 4.5, large-turbo 4 / 0 (no CFG);
# FLUX.1-dev 28 steps with distilled guidance 3.5 (an embedding, one transformer pass per step),
# schnell 4 steps without guidance; FLUX.1-Fill-dev (inpainting) 50 steps with guidance 30.
VARIANTS: dict[str, tuple[int, float]] = {
    "turbo": (1, 0.0), "lightning": (4, 0.0), "lcm": (4, 1.0),
    "sd3.5-large": (28, 3.5), "sd3.5-medium": (40, 4.5), "sd3.5-turbo": (4, 0.0),
    "flux-dev": (28, 3.5), "flux-schnell": (4, 0.0), "flux-fill": (50, 30.0),
    # the 2026 families' few-step models, named "<family>-<word in the model's name>": Z-Image-Turbo 8 steps
    # (8 transformer passes in diffusers 0.42) without CFG
    "z-image-turbo": (8, 0.0),
    # FLUX.2 Klein 4B/9B are step-distilled (4 steps, no CFG); FLUX.2-klein-base-4B/9B 50 steps with CFG 4
    "flux2-klein": (4, 1.0), "flux2-klein-base": (50, 4.0)}
FEW_STEP = frozenset({"turbo", "lightning", "lcm", "sd3.5-turbo", "flux-schnell", "z-image-turbo", "flux2-klein"})


@dataclass(frozen=True)
class Spec:
    """What one family is and can do (the properties of ``Family`` read it)."""

    label: str  # for people: "SD 1.x"
    native: int  # px, its usual models' side (SD 2.x: the 768 v-prediction models)
    steps: int  # defaults without a variant
    guidance: float
    pipelines: str  # diffusers' class-name stem: f"{stem}Pipeline", f"{stem}Img2ImgPipeline", ...
    context: int | None = None  # the UNet's cross-attention width (LoRAs and ControlNets must match it)
    base_native: int | None = None  # its epsilon-prediction models' side, where they differ (SD 2.x base)
    flow: bool = False  # a flow-matching transformer: its own scheduler, 16-channel latents
    controls: frozenset[str] = frozenset()  # control kinds (ControlNets, adapters) that fit it
    controlnet: str = "ControlNet"  # diffusers' ControlNet class stem: f"{stem}Model"
    control_modes: tuple[str, ...] = MODES  # the modes diffusers has a ControlNet pipeline for
    union_classes: bool = False  # union ControlNets have classes of their own (…UnionModel, …ControlNetUnion…)
    refiner: bool = False  # takes the (SDXL) refiner
    no_negative: str | None = None  # why it has no negative prompt
    served: bool = True  # False: only ever a refiner (--refiner), never a model of its own
    hires_strength: float = 0.5  # the second pass's img2img strength (hires.py)
    toy: bool = False  # a toy model (the demo): big pictures and upscales come with a note, no auto second pass
    edit: bool = False  # instruction edits: the image is context (not init latents), img2img is the plain pipeline
    lora_layouts: str | None = None  # another family whose LoRAs load into it (its blocks are that family's)
    single_file: bool = True  # flow families: single transformer files load with a config folder
    true_cfg: bool = False  # its pipelines' CFG is true_cfg_scale, on only with a negative prompt (Qwen-Image)
    variant: str | None = None  # the VARIANTS key of its models whose names say no other
    no_variation: str | None = None  # why variation seeds are refused
    edit_images: bool = False  # an edit model whose pipelines take more pictures: reference layers go in as those
    modes: tuple[str, ...] = MODES  # the job modes its pipelines run (an edit-only model: none from text alone)
    inpaint_pipeline: bool = True  # False (an edit model): a selection runs its edit pipeline, the server's blend
    # keeps the rest of the picture


SD_CONTROLS = frozenset({SKETCH, LAYERS})
IP_CONTROLS = SD_CONTROLS | {REFERENCES}  # h94's IP-Adapters: SD 1.5 and SDXL (none for SD 2.x); FLUX.1: Redux
SPECS: dict[str, Spec] = {  # by the family's wire name (Family.value)
    "sd1": Spec("SD 1.x", 512, 20, 7.5, "StableDiffusion", context=768, controls=IP_CONTROLS),
    "sd2": Spec("SD 2.x", 768, 20, 7.5, "StableDiffusion", context=1024, base_native=512,
                      controls=SD_CONTROLS),
    "sdxl": Spec("SDXL", 1024, 25, 6.0, "StableDiffusionXL", context=2048, controls=IP_CONTROLS,
                       union_classes=True, refiner=True, hires_strength=0.4),
    "sdxl-refiner": Spec("SDXL refiner", 1024, 25, 6.0, "StableDiffusionXL", context=1280, served=False),
    "sd3": Spec("SD 3/3.5", 1024, 28, 7.0, "StableDiffusion3", flow=True, controls=frozenset({LAYERS}),
                      controlnet="SD3ControlNet", control_modes=("txt2img",)),
    "flux": Spec("FLUX.1", 1024, *VARIANTS["flux-dev"], "Flux", flow=True, controls=frozenset({LAYERS, REFERENCES}),
                       controlnet="FluxControlNet", no_negative="FLUX.1 is guidance-distilled and has no negative prompt"),
    # FLUX.1 Kontext [dev]: 28 steps, guidance 2.5 (diffusers' docs); no ControlNet/Redux pipelines of its own
    "flux-kontext": Spec("FLUX.1 Kontext", 1024, 28, 2.5, "FluxKontext", flow=True, edit=True,
                               lora_layouts="flux",  # FLUX.1-dev's blocks: FLUX.1 LoRAs fit
                               no_negative="FLUX.1 Kontext is guidance-distilled and has no negative prompt"),
    # 2026 families: flow-matching transformers with real CFG (a negative prompt), defaults from the model cards
    # lodestones/Chroma1-HD: FLUX.1-like, T5 only
    "chroma": Spec("Chroma", 1024, 40, 3.0, "Chroma", flow=True, lora_layouts="flux"),
    # Z-Image (base): the pipelines' defaults, 50 steps with CFG 5; Tongyi-MAI/Z-Image-Turbo: "z-image-turbo"
    "z-image": Spec("Z-Image", 1024, 50, 5.0, "ZImage", flow=True),
    # Qwen/Qwen-Image: 50 steps, true CFG 4.0, 1328 px for 1:1 (its model card)
    "qwen-image": Spec("Qwen-Image", 1328, 50, 4.0, "QwenImage", flow=True, true_cfg=True),
    # Qwen/Qwen-Image-Edit: 50 steps, true CFG 4.0 (its model card). Qwen-Image's blocks (its LoRAs fit), the picture
    # seen at about 1024² whatever the job's size. A selection runs the edit pipeline (QwenImageEditInpaintPipeline
    # always paints about 1 MP, not the job's size) and the server's blend keeps the rest.
    "qwen-image-edit": Spec("Qwen-Image-Edit", 1024, 50, 4.0, "QwenImageEdit", flow=True, true_cfg=True,
                                  edit=True, modes=("img2img", "inpaint"), inpaint_pipeline=False,
                                  lora_layouts="qwen-image", single_file=False),
    # Qwen/Qwen-Image-Edit-2509 and -2511 (QwenImageEditPlusPipeline): 40 steps, true CFG 4.0 (their model cards);
    # several pictures: the edited one, then the reference layers'. diffusers has no inpaint pipeline for it.
    "qwen-image-edit-plus": Spec("Qwen-Image-Edit-Plus", 1024, 40, 4.0, "QwenImageEditPlus", flow=True,
                                       true_cfg=True, edit=True, edit_images=True, modes=("img2img", "inpaint"),
                                       inpaint_pipeline=False, lora_layouts="qwen-image", single_file=False),
    # black-forest-labs/FLUX.2-klein-4B and -9B (distilled) and their -base- models; a negative prompt is always "".
    # Its pipelines edit: a job with an image is an edit (Flux2KleinPipeline's image, the inpaint one for a selection)
    "flux2-klein": Spec("FLUX.2 Klein", 1024, *VARIANTS["flux2-klein"], "Flux2Klein", flow=True,
                              variant="flux2-klein", edit=True, edit_images=True,
                              no_negative="FLUX.2 Klein's pipelines take no negative prompt",
                              no_variation="variation seeds are not wired to FLUX.2 Klein's latents yet"),
    # the built-in toy: a tiny SD 1.x-style pipeline (cross-attention 64 wide)
    "demo": Spec("demo", 64, 20, 7.5, "StableDiffusion", controls=IP_CONTROLS, toy=True),
}


# The tiny VAEs (madebyollin's TAESD family) by the latents they decode (engine/tiny_vae.py): SD 1.x and 2.x share a
# latent space, the SDXL refiner's is SDXL's, SD 3 and 3.5 share theirs.
TINY_VAES = {"sd1": "madebyollin/taesd", "sd2": "madebyollin/taesd", "sdxl": "madebyollin/taesdxl",
              "sdxl-refiner": "madebyollin/taesdxl", "sd3": "madebyollin/taesd3",
              "flux": "madebyollin/taef1", "chroma": "madebyollin/taef1",
              "z-image": "madebyollin/taef1"}  # Chroma and Z-Image: FLUX.1's VAE
TINY_VAES["flux-kontext"] = TINY_VAES["flux"]  # Kontext edits in FLUX.1's latent space
# --openvino (engine/openvino_path.py): the UNets it converts; SDXL's compiled copy would cost 10 GB in fp32
OPENVINO = {"sd1": "auto", "sd2": "auto", "sdxl": "on"}
