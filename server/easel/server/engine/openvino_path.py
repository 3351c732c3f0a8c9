"""OpenVINO for SD 1.x/2.x and SDXL on the CPU in float32 (``easel serve --openvino``, the ``openvino`` extra).

On a CPU without bfloat16 a model runs in float32, where OpenVINO's CPU plug-in runs the UNet and the VAE
decoder faster than torch (docs/performance.md has the measured rows). ``prepare`` converts the loaded
model's UNet and VAE decoder with ``openvino.convert_model`` (a trace of the torch modules: the same
weights, float32 kept) and saves the result in the user cache (``openvino/`` under Easel's cache folder),
keyed by a hash of the weights, the module's config and both libraries' versions, so a model converts once;
later loads read it back in seconds. Each job shape compiles once per load with a fixed shape (faster than
a dynamic one), on as many threads as torch uses.

A job runs through OpenVINO only where the converted graph is the whole computation: no ControlNet, no
reference layer (IP-Adapter), no regional prompt, no LoRA; the UNet's ``forward`` is swapped for the
call's duration (``applied``) and falls back to torch for any call it cannot take (extra residuals,
attention arguments, a timestep per image, latent sides the UNet's upsamplers cannot just double). Everything else about the pipeline stays torch: text
encoders, scheduler, VAE encoder. Pixels differ from torch's within float32 rounding.

OpenVINO keeps its own copy of the weights (compiled into its layouts): SD 1.5's UNet in float32 takes
about 3.4 GB more memory. ``auto`` (the default) uses it when the package is installed, the model is an
SD 1.x/2.x model on the CPU in float32 and its UNet is big enough to pay off (``MIN_PARAMETERS``: not the
tests' tiny models or the demo); ``on`` also for small ones and SDXL (10 GB more in float32; an error
when the package is missing); ``off`` never.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ...client.codes import ErrorCode
from ..families import Family
from ..settings import OPENVINO
from .types import EngineError, EngineJob, Progress

log = logging.getLogger(__name__)
CHOICES = OPENVINO
MIN_PARAMETERS = 100_000_000  # auto: UNets at least this big (SD 1.5's has 860 M; the demo's a few M)
KEEP_SHAPES = 3  # compiled shapes kept per module (each holds its own buffers)
INSTALL = "pip install '.[openvino]' in the checkout"


def available() -> bool:
    """Whether the ``openvino`` package is installed."""
    return importlib.util.find_spec("openvino") is not None


def check_choice(choice: str) -> None:
    """EngineError naming ``openvino`` for an unknown choice, or ``on`` without the package."""
    if choice not in CHOICES:
        raise EngineError(f"unknown openvino choice {choice!r}; use one of {', '.join(CHOICES)}", field="openvino")
    if choice == "on" and not available():
        raise EngineError(f"--openvino on needs the openvino package: {INSTALL}", field="openvino",
                          code=ErrorCode.MODEL_LOAD_FAILED)


def wanted(choice: str, device: str, dtype: str, family: Family, unet: Any) -> bool:
    """Whether a model of ``family`` loaded on ``device`` in ``dtype`` runs its UNet through OpenVINO
    (``Family.openvino``: the choice that turns it on for the family)."""
    if choice == "off" or device != "cpu" or dtype != "float32" or family.openvino is None or unet is None:
        return False
    if choice == "on":
        return True
    big = sum(p.numel() for p in unet.parameters()) >= MIN_PARAMETERS
    return family.openvino == "auto" and big and available()


def cache_folder() -> Path:
    from platformdirs import user_cache_path

    return Path(user_cache_path("easel")) / "openvino"


def weights_key(module: torch.nn.Module, kind: str) -> str:
    """A hash of a module's weights, config and the libraries' versions: the converted model's cache name."""
    import diffusers
    import openvino

    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{kind}|{diffusers.__version__}|{openvino.__version__}|{torch.__version__}".encode())
    digest.update(repr(sorted(dict(getattr(module, "config", {}) or {}).items())).encode())
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return f"{kind}-{digest.hexdigest()}"


class _UNetInputs(torch.nn.Module):
    """The UNet's plain call with positional tensors, as the converter traces it (SDXL: its two extras)."""

    def __init__(self, unet: Any, xl: bool):
        super().__init__()
        self.unet, self.xl = unet, xl

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor,
                *extra: torch.Tensor) -> torch.Tensor:
        added = {"text_embeds": extra[0], "time_ids": extra[1]} if self.xl else None
        return self.unet(sample, timestep, text, added_cond_kwargs=added, return_dict=False)[0]


class Converted:
    """One module's OpenVINO model: read from the cache or converted once, compiled per input shape."""

    def __init__(self, module: torch.nn.Module, kind: str, example: tuple[torch.Tensor, ...], say: Callable[[str], None]):
        import openvino as ov

        self.core = ov.Core()  # no CACHE_DIR: a compiled blob per size would hold the weights again on disk
        path = cache_folder() / weights_key(module, kind) / "model.xml"
        if not path.is_file():
            say(f"converting the {kind} for OpenVINO (once per model; minutes on a CPU)")
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks the trace keeps as constants
                model = ov.convert_model(module, example_input=example)
            path.parent.mkdir(parents=True, exist_ok=True)
            ov.save_model(model, str(path), compress_to_fp16=False)  # float32 kept: the tolerance needs it
            log.info("converted the %s for OpenVINO into %s", kind, path.parent)
        self.model = self.core.read_model(str(path))
        self.kind = kind
        self._compiled: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    def request(self, shapes: tuple[tuple[int, ...], ...], say: Callable[[str], None]) -> Any:
        """An infer request of the model compiled for these input shapes (kept for the next call)."""
        with self._lock:
            found = self._compiled.get(shapes)
            if found is None:
                say(f"compiling the {self.kind} for OpenVINO at this size (once per size)")
                model = self.model.clone()
                model.reshape({i: list(shape) for i, shape in enumerate(shapes)})
                threads = max(1, torch.get_num_threads())
                found = self.core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                               "PERFORMANCE_HINT": "LATENCY",
                                                               "INFERENCE_NUM_THREADS": threads}).create_infer_request()
                self._compiled[shapes] = found
                while len(self._compiled) > KEEP_SHAPES:
                    self._compiled.popitem(last=False)
            self._compiled.move_to_end(shapes)
            return found

    def run(self, inputs: list[torch.Tensor], say: Callable[[str], None]) -> torch.Tensor:
        arrays = [t.detach().to(torch.float32).contiguous().numpy() for t in inputs]
        request = self.request(tuple(a.shape for a in arrays), say)
        request.infer(arrays)
        return torch.from_numpy(request.get_output_tensor(0).data.copy())


class OpenVINOModel:
    """A loaded model's UNet and VAE decoder in OpenVINO, swapped in for the jobs it can run (``applied``)."""

    def __init__(self, pipe: Any, say: Callable[[Progress], None]):
        self.unet, self.decoder = pipe.unet, pipe.vae.decoder
        self.xl = self.unet.config.addition_embed_type == "text_time"  # SDXL: pooled text and size conditioning
        # the trace takes the upsamplers' sizes as doubled: latents whose sides this divides (others: torch)
        self.factor = 2 ** int(getattr(self.unet, "num_upsamplers", 0))
        note = lambda text: say(Progress("load", 0, 1, text))  # noqa: E731
        text_width = self.unet.config.cross_attention_dim
        example = [torch.randn(2, self.unet.config.in_channels, 8, 8), torch.tensor(999.0), torch.randn(2, 77, text_width)]
        if self.xl:
            add = self.unet.add_embedding.linear_1.in_features
            time_ids = 6
            example += [torch.randn(2, add - time_ids * self.unet.config.addition_time_embed_dim), torch.randn(2, time_ids)]
        self._unet = Converted(_UNetInputs(self.unet, self.xl).eval(), "UNet", tuple(example), note)
        latent = torch.randn(1, self.decoder.conv_in.in_channels, 8, 8)
        self._decoder = Converted(self.decoder.eval(), "VAE decoder", (latent,), note)

    def unet_forward(self, say: Callable[[str], None]) -> Callable[..., Any]:
        original = self.unet.forward

        def forward(sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor, *args: Any,
                    return_dict: bool = True, **kwargs: Any) -> Any:
            added = kwargs.get("added_cond_kwargs") or {}
            plain = not args and not any(v is not None for k, v in kwargs.items() if k != "added_cond_kwargs")
            t = torch.as_tensor(timestep, dtype=torch.float32)
            traced = set(added) == ({"text_embeds", "time_ids"} if self.xl else set()) and t.numel() == 1
            if not plain or not traced or any(side % self.factor for side in sample.shape[-2:]):
                return original(sample, timestep, encoder_hidden_states, *args, return_dict=return_dict, **kwargs)
            inputs = [sample, t.reshape(()), encoder_hidden_states]
            if self.xl:
                inputs += [added["text_embeds"], added["time_ids"]]
            out = self._unet.run(inputs, say).to(sample.dtype)
            if not return_dict:
                return (out,)
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            return UNet2DConditionOutput(sample=out)

        return forward

    def decoder_forward(self, say: Callable[[str], None]) -> Callable[..., Any]:
        original = self.decoder.forward

        def forward(z: torch.Tensor, latent_embeds: Any = None) -> torch.Tensor:
            if latent_embeds is not None:
                return original(z, latent_embeds)
            return self._decoder.run([z], say).to(z.dtype)

        return forward


def usable(job: EngineJob, extras: Any) -> bool:
    """Whether the converted graph is the whole of ``job``'s UNet calls (no guides, adapters, regions, LoRAs)."""
    return not (job.loras or job.regions or job.control_model or extras.controls or extras.references)


@contextmanager
def applied(model: OpenVINOModel | None, on: bool, progress: Callable[[Progress], None]) -> Iterator[None]:
    """``model``'s UNet and VAE decoder run through OpenVINO for the duration (nothing when ``on`` is False
    or the model has none); torch's own forwards are back however it ends."""
    if model is None or not on:
        yield
        return
    say = lambda text: progress(Progress("denoise", 0, 0, text))  # noqa: E731
    model.unet.forward = model.unet_forward(say)
    model.decoder.forward = model.decoder_forward(say)
    try:
        yield
    finally:
        del model.unet.forward
        del model.decoder.forward
