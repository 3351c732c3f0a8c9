"""Model families as one type: ``Family``, and what each family can do.

A ``Family`` is a ``str`` enum, so it travels as ``"sd1"``, ``"sd2"``, ``"sdxl"``, ``"sdxl-refiner"``,
``"sd3"``, ``"flux"``, ``"chroma"``, ``"z-image"``, ``"qwen-image"``, ``"qwen-image-edit"``,
``"qwen-image-edit-plus"``, ``"flux2-klein"`` or ``"demo"`` (the welcome's ``family``, the library's listing) and compares equal
to those strings. Everything else asks it instead of comparing names: its native size, latent channels
and size step, whether it is a flow-matching transformer (SD 3/3.5, FLUX.1, Chroma, Z-Image, Qwen-Image, FLUX.2 Klein), its default steps and
guidance (with the few-step variants' in ``VARIANTS``), which request ``FEATURES`` it supports and why
not, its second pass ("hires fix") defaults, whether it is a toy, its modes and diffusers pipeline
classes, and which control kinds fit it (the ``sketch`` ControlNet guide of SD 1.x/2.x/SDXL, the control
``layers`` of every served family; IP-Adapters or other control layers are added in family_specs.py's table) with
their diffusers classes and the modes they run in (SD 3/3.5: text to image only).
This module and its table (family_specs.py) import nothing else of Easel: the engine and the library both use them.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

from .family_specs import (  # noqa: F401 - re-exported: the family names and variants others import from here
    FEW_STEP,
    LAYERS,
    MODES,
    OPENVINO,
    REFERENCES,
    SKETCH,
    SPECS,
    TINY_VAES,
    VARIANTS,
    Spec,
)

_MODE_PARTS = {"txt2img": "", "img2img": "Img2Img", "inpaint": "Inpaint"}
MODE_WORDS = {"txt2img": "text to image", "img2img": "image to image", "inpaint": "inpainting"}
# Request fields (power features) a model may or may not support; the welcome lists each model's own.
# ``edit``: an instruction-edit model (FLUX.1 Kontext, FLUX.2 Klein, Qwen-Image-Edit): with an image the prompt is an
# instruction, no strength.
FEATURES = ("negative_prompt", "scheduler", "loras", "control_model", "variation_seed", "regions", "refiner", "edit")


class Family(str, Enum):
    """A model family; its value is the name on the wire."""

    SD1 = "sd1"
    SD2 = "sd2"
    SDXL = "sdxl"
    SDXL_REFINER = "sdxl-refiner"
    SD3 = "sd3"
    FLUX = "flux"
    FLUX_KONTEXT = "flux-kontext"
    CHROMA = "chroma"
    Z_IMAGE = "z-image"
    QWEN_IMAGE = "qwen-image"
    QWEN_IMAGE_EDIT = "qwen-image-edit"
    QWEN_IMAGE_EDIT_PLUS = "qwen-image-edit-plus"
    FLUX2_KLEIN = "flux2-klein"
    DEMO = "demo"

    __str__ = str.__str__  # "sdxl" in messages, logs and f-strings (not "Family.SDXL")
    __format__ = str.__format__

    @property
    def _spec(self) -> Spec:
        return SPECS[self.value]

    @property
    def label(self) -> str:
        """``SD 1.x``, ``SDXL``, ``FLUX.1`` …"""
        return self._spec.label

    @property
    def native(self) -> int:
        """The native side in px of its usual models (configs, where known, win)."""
        return self._spec.native

    def native_for(self, v_prediction: bool) -> int:
        """The native side of its v-prediction (True) or epsilon-prediction models (SD 2.x: 768 / 512)."""
        return self._spec.native if v_prediction or self._spec.base_native is None else self._spec.base_native

    @property
    def mixes_prediction(self) -> bool:
        """Its checkpoints come as epsilon- and v-prediction models that only the weights tell apart (SD 2.x)."""
        return self._spec.base_native is not None

    @property
    def context(self) -> int | None:
        """The UNet's cross-attention width (None: none, or it varies)."""
        return self._spec.context

    @property
    def flow(self) -> bool:
        """A flow-matching transformer (SD 3/3.5, FLUX.1): its own scheduler, 16-channel latents."""
        return self._spec.flow

    @property
    def latent_channels(self) -> int:
        return 16 if self.flow else 4

    @property
    def tiny_vae(self) -> str | None:
        """The hub id of the tiny VAE (TAESD family, diffusers' AutoencoderTiny) made for its latents; None: none
        (the demo has a VAE of its own)."""
        return TINY_VAES.get(self.value)

    def size_step(self, vae_scale: int) -> int:
        """Sizes must be multiples of this: the VAE's scale, times the transformer's 2x2 patches for flow models."""
        return vae_scale * 2 if self.flow else vae_scale

    @property
    def openvino(self) -> str | None:
        """Which ``--openvino`` choice runs its UNet through OpenVINO: "auto" (the default) or only "on"; None: never."""
        return OPENVINO.get(self.value)

    @property
    def served(self) -> bool:
        """A model of its own (False: a refiner, served with ``--refiner``)."""
        return self._spec.served

    @property
    def hires_strength(self) -> float:
        """The second pass's strength when a request leaves ``hires_strength`` out: enough to paint detail
        into a Lanczos upscale, little enough to keep the first pass's composition."""
        return self._spec.hires_strength

    @property
    def toy(self) -> bool:
        """A toy model (the demo): it knows simple shapes only, so its big pictures and upscales come with a note."""
        return self._spec.toy

    @property
    def second_pass_auto(self) -> bool:
        """Whether ``hires: auto`` runs the second pass. Not for a toy: the demo repaints even a flat tile
        into a shape at low strength, so its tiled second pass makes a big canvas slower and worse."""
        return not self._spec.toy

    def defaults(self, variant: str | None = None) -> tuple[int, float]:
        """Default (steps, guidance) for its models, or for ``variant`` (a ``VARIANTS`` key)."""
        return VARIANTS[variant] if variant else (self._spec.steps, self._spec.guidance)

    # ------------------------------------------------------------------ what a request may use

    def unsupported(self, feature: str) -> str | None:
        """Why its models cannot use request field ``feature`` (None: they can)."""
        spec = self._spec
        if feature == "negative_prompt":
            return spec.no_negative
        if feature == "scheduler" and spec.flow:
            return f"{spec.label} runs its own flow-matching scheduler"
        if feature == "control_model" and not self.fits_control(SKETCH):
            return f"the sketch ControlNets are {_joined(f for f in Family if f.fits_control(SKETCH))} ControlNets"
        if feature == "controls" and not (self.fits_control(LAYERS) or spec.edit_images):
            return f"control layers are for {_joined(f for f in Family if f.fits_control(LAYERS))} models"
        if feature == "regions" and spec.flow:
            return (f"regional prompts mask a UNet's cross-attention, and {spec.label} is a transformer with joint "
                    "attention")
        if feature == REFERENCES and spec.edit and not spec.edit_images:
            return f"{spec.label} takes one picture, the one it edits: send no reference layers with it"
        if feature == REFERENCES and not (self.fits_control(REFERENCES) or spec.edit_images):
            return (f"reference layers (IP-Adapters, FLUX Redux) are for "
                    f"{_joined(f for f in Family if f.fits_control(REFERENCES))} models")
        if feature == "edit" and not spec.edit:
            return f"instruction edits are for {_joined(f for f in Family if f.edits)} models"
        if feature == "variation_seed" and spec.no_variation:
            return spec.no_variation
        if feature == "variation_seed" and spec.edit:
            return f"{spec.label} edits start from pure noise with the image as context: there is no noise to blend"
        if feature == "refiner" and not spec.refiner:
            return f"the refiner is {_joined(f for f in Family if f._spec.refiner)}'s"
        return None

    @property
    def features(self) -> list[str]:
        """The ``FEATURES`` its models support (the welcome's per-model ``features``)."""
        return [f for f in FEATURES if self.unsupported(f) is None]

    @property
    def single_files(self) -> bool:
        """Whether its single files are served (flow families: the transformer file plus a config folder)."""
        return self._spec.single_file

    @property
    def default_variant(self) -> str | None:
        """The ``VARIANTS`` key of its models whose names say no other (FLUX.2 Klein: the distilled ones)."""
        return self._spec.variant

    @property
    def true_cfg(self) -> bool:
        """Its pipelines take CFG as ``true_cfg_scale`` and run it only with a negative prompt (Qwen-Image:
        the model card's is ``" "`` when there is none)."""
        return self._spec.true_cfg

    @property
    def lora_families(self) -> frozenset[Family]:
        """The families whose LoRAs fit its models: its own, and the one whose blocks it keeps (Chroma: FLUX.1's)."""
        return frozenset({self} | ({Family(self._spec.lora_layouts)} if self._spec.lora_layouts else set()))

    @property
    def modes(self) -> tuple[str, ...]:
        """The job modes its pipelines run (Qwen-Image-Edit: image to image and inpainting, both edits)."""
        return self._spec.modes

    def mode_unsupported(self, mode: str) -> str | None:
        """Why its models cannot run a ``mode`` job (None: they can)."""
        if mode in self.modes:
            return None
        return f"{self.label} edits a picture and paints none from a prompt alone"

    @property
    def controls(self) -> frozenset[str]:
        """The control kinds (ControlNets, adapters) made for it."""
        return self._spec.controls

    def fits_control(self, kind: str) -> bool:
        return kind in self._spec.controls

    @property
    def edits(self) -> bool:
        """An instruction-edit model: a job with an image edits it as the prompt says (strength unused)."""
        return self._spec.edit

    @property
    def edit_images(self) -> bool:
        """An edit model that takes further pictures beside the one it edits (FLUX.2 Klein, Qwen-Image-Edit-Plus): a
        job's ``reference`` layers go in as those pictures, no adapter needed."""
        return self._spec.edit_images

    @property
    def inpaint_pipeline(self) -> bool:
        """Whether a selection runs an inpaint pipeline (False: an edit family without one, Qwen-Image-Edit: its
        edit pipeline edits the selection's picture and the server's blend keeps the rest)."""
        return self._spec.inpaint_pipeline

    @property
    def takes_refiner(self) -> bool:
        """Whether the refiner (an SDXL refiner) can finish its models' images."""
        return self._spec.refiner

    @property
    def control_modes(self) -> tuple[str, ...]:
        """The modes its ControlNets run in (diffusers has a ControlNet pipeline for)."""
        return self._spec.control_modes if self._spec.controls else ()

    def control_unsupported(self, mode: str) -> str | None:
        """Why its ControlNets cannot steer a ``mode`` job (None: they can, or its layers are pictures: FLUX.2 Klein)."""
        if mode in self.control_modes or self._spec.edit_images:
            return None
        if not self.control_modes:
            return f"{self.label} has no ControlNets"
        works = " and ".join(MODE_WORDS[m] for m in self.control_modes)
        return f"{self.label} ControlNets run {works} only (diffusers has no {self.label} ControlNet pipeline for " \
               f"{MODE_WORDS[mode]})"

    def controlnet_class(self, union: bool = False) -> str:
        """The diffusers class of its ControlNets (``union``: of its ControlNet Union models)."""
        return f"{self._spec.controlnet}{'Union' if union and self._spec.union_classes else ''}Model"

    def pipeline_class(self, mode: str, control: str | None = None, union: bool = False) -> str:
        """The diffusers class name for ``mode`` (with a ``control`` kind: its ControlNet pipeline, ``union``:
        the one for its ControlNet Union models)."""
        if mode not in self.modes:
            raise ValueError(f"unknown mode {mode!r}; one of {', '.join(self.modes)}")
        if control is None:
            edit = self._spec.edit and (mode == "img2img" or not self._spec.inpaint_pipeline)
            part = "" if edit else _MODE_PARTS[mode]  # the edit pipeline
            return f"{self._spec.pipelines}{part}Pipeline"
        if mode not in self.control_modes:
            raise ValueError(self.control_unsupported(mode))
        net = "ControlNetUnion" if union and self._spec.union_classes else "ControlNet"
        return f"{self._spec.pipelines}{net}{_MODE_PARTS[mode]}Pipeline"

    @property
    def pipeline_classes(self) -> frozenset[str]:
        """Its plain pipelines' class names, one per mode."""
        return frozenset(self.pipeline_class(mode) for mode in self.modes)

    @property
    def pipeline_label(self) -> str:
        """The families whose pipelines it shares (``SD 1.x/2.x``): what a ControlNet must be made for."""
        return _joined(f for f in Family if f._spec.pipelines == self._spec.pipelines and f.served) or self.label

    @classmethod
    def of_pipeline(cls, class_name: str) -> Family | None:
        """The family a diffusers pipeline class belongs to (SD 1.x for SD 1.x/2.x: configs tell them apart)."""
        return next((f for f in cls if f.served and class_name in f.pipeline_classes), None)

    @classmethod
    def of_controlnet_class(cls, class_name: str) -> Family | None:
        """The one served family whose ControlNets have this diffusers class (None: none, or several, like
        ``ControlNetModel``: their configs' widths tell them apart)."""
        found = {f for f in cls if f.served and not f.toy and class_name in (f.controlnet_class(False),
                                                                            f.controlnet_class(True))}
        return found.pop() if len(found) == 1 else None

    @classmethod
    def of_context(cls, width: int | None) -> Family | None:
        """The family whose UNet has this cross-attention width (768 SD 1.x, 1024 SD 2.x, ...)."""
        return next((f for f in cls if width is not None and f.context == width), None)


def _joined(families: Iterable[Family]) -> str:
    """Labels joined, the previous one's first word said once: ``SD 1.x/2.x/SDXL/SD 3/3.5`` (toys, the demo,
    left out)."""
    out: list[str] = []
    previous = ""
    for family in families:
        if family.toy:
            continue
        label = family.label
        head = previous.split(" ")[0] + " " if " " in previous else ""
        out.append(label[len(head):] if head and label.startswith(head) else label)
        previous = label
    return "/".join(out)

