"""The engine's contract: what a job asks for, what a model looks like, how progress is told.

The websocket app and the generation service talk to the engine only through these types.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from PIL import Image as PILImage

from ...client.protocol import Control, GenerateRequest, Region
from ..families import Family

Mode = Literal["txt2img", "img2img", "inpaint"]


class EngineError(Exception):
    """A job failed for a reason the user can act on. ``field`` names the request field."""

    def __init__(self, message: str, field: str | None = None, code: str = "bad_request"):
        super().__init__(message)
        self.field = field
        self.code = code


class JobCancelled(Exception):
    """Raised out of ``Engine.run`` when ``cancelled()`` turned true (checked every step)."""


@dataclass
class ModelInfo:
    """A model the server offers (loaded or not)."""

    id: str  # what clients send as ``model``
    family: Family  # a plain "sdxl" becomes Family.SDXL; "sdxl" on the wire
    native: tuple[int, int]  # native width, height in pixels
    default_steps: int
    default_guidance: float
    source: str  # "hub", "folder", "single_file", "builtin"
    loaded: bool = False
    few_step: bool = False  # turbo / LCM-style
    name: str = ""  # readable ("dreamshaper 8"); the id when empty
    problem: str | None = None  # why it cannot be used (a broken library entry); None = usable
    inpaint: bool = False  # an inpainting model (9-channel SD UNet, FLUX.1 Fill)
    loras: list[str] | None = None  # ids of the LoRAs that fit it (None: the server has no LoRAs)
    features: list[str] | None = None  # the request fields of families.FEATURES it supports
    controls: list[str] | None = None  # the control kinds (``Control.kind``) it can use on this server
    dtype: str | None = None  # what it runs (or will run) in
    offload: str = "none"  # "none" | "model" | "sequential" CPU offload

    def __post_init__(self) -> None:
        self.family = Family(self.family)

    def to_dict(self) -> dict:
        d = {
            "id": self.id, "name": self.name or self.id, "family": self.family.value, "native": list(self.native),
            "default_steps": self.default_steps, "default_guidance": self.default_guidance,
            "source": self.source, "loaded": self.loaded, "few_step": self.few_step, "inpaint": self.inpaint,
        }
        if self.problem is not None:
            d["problem"] = self.problem
        if self.loras is not None:
            d["loras"] = list(self.loras)
        if self.features is not None:
            d["features"] = list(self.features)
        if self.controls is not None:
            d["controls"] = list(self.controls)
        if self.dtype is not None:
            d["dtype"] = self.dtype
        d["offload"] = self.offload
        return d


@dataclass
class EngineJob:
    """One diffusers call, already at working size. Images are RGB, masks L, both (width, height)."""

    mode: Mode
    prompt: str
    negative_prompt: str = ""
    model: str | None = None
    steps: int | None = None
    guidance: float | None = None
    seeds: list[int] = field(default_factory=lambda: [0])  # one image per seed
    width: int = 512
    height: int = 512
    scheduler: str | None = None
    strength: float = 1.0
    image: PILImage.Image | None = None
    mask: PILImage.Image | None = None
    preview: bool = True
    # power features (docs/features.md)
    loras: list[tuple[str, float]] = field(default_factory=list)  # (id from Engine.loras(), weight)
    control_model: str | None = None  # id from Engine.control_models()
    control_image: PILImage.Image | None = None  # RGB at (width, height)
    control_strength: float = 1.0
    controls: list[Control] | None = None  # control layers; their images are in ``attached``
    attached: dict[str, PILImage.Image] = field(default_factory=dict)  # images the request's lists name, RGB
    # at (width, height), by attachment name
    regions: list[Region] | None = None  # regional prompts; their masks are in ``attached`` (engine/regional.py)
    variation_seed: int | None = None  # image i blends in the noise of variation_seed + i
    variation_strength: float = 0.0
    refiner: bool = False  # SDXL: the configured refiner does the last denoising steps
    refiner_switch: float = 0.8  # fraction of the denoising done by the base model
    #: the validated request this job serves, whole (``work.engine_job``): what EngineJob does not copy
    #: is read from it; None for jobs made directly (tests, benches)
    request: GenerateRequest | None = None


@dataclass
class Progress:
    """A progress report. stage: "load" (model loading/downloading) or "denoise" (steps)."""

    stage: str
    step: int
    total: int
    message: str = ""
    preview: PILImage.Image | None = None  # cheap latent->RGB preview, small


ProgressFn = Callable[[Progress], None]
CancelledFn = Callable[[], bool]


class EngineAPI(Protocol):
    """What the server asks of an engine (``engine.Engine``; tests' slow and failing engines too)."""

    device: str
    dtype: str

    def models(self) -> list[ModelInfo]:
        """Every model the engine offers, loaded or not."""
        ...

    def model_info(self, ref: str | None) -> ModelInfo:
        """One model (None: the default); EngineError ``unknown_model`` for one it does not offer."""
        ...

    def schedulers(self) -> list[str]: ...

    def loras(self) -> list[str]: ...

    def control_models(self) -> list[str]: ...

    def check_controls(self, ref: str | None, controls: Sequence[Control]) -> list[str]:
        """The ControlNet id of each control layer on model ``ref``; EngineError for a layer none fits."""
        ...

    def refiners(self) -> list[str]: ...

    def load(self, ref: str | None, progress: ProgressFn | None = None) -> ModelInfo:
        """Load a model (None: the default) if it is not loaded, telling ``progress``."""
        ...

    def run(self, job: EngineJob, progress: ProgressFn, cancelled: CancelledFn) -> list[PILImage.Image]:
        """One diffusers call: one image per seed; JobCancelled within a step of ``cancelled()``."""
        ...

    def close(self) -> None: ...
