"""int8 in OpenVINO for ``make bench-full --only int8``, run by the OpenVINO venv's python (it has NNCF).

Easel's OpenVINO path runs the UNet and VAE decoder in float32 (engine/openvino_path.py); this measures what
int8 would give on a CPU with VNNI but no AMX: the same conversion (``openvino.convert_model`` of the
diffusers modules), then NNCF's post-training quantization (``nncf.quantize``, mixed preset, fast bias
correction) calibrated on the UNet and decoder inputs of two other jobs (other prompt, other seeds), and the
test job timed in paired turns: torch fp32, OpenVINO f32, the decoder in int8, UNet and decoder in int8.
The caller sets ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI`` so that a CPU with AMX runs VNNI kernels (the
convolutions' kernel names are reported to show it). Prints one JSON line: seconds per variant and per
turn, and each variant's pixels against torch fp32 (mean absolute difference, PSNR). Only this venv's packages are imported: no easel, no bench.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

CALIBRATION = ("a watercolour harbour at dusk, boats and gulls", (11, 12))  # prompt, seeds: not the test job's


def convert(module: Any, example: tuple, path: Path) -> Any:
    import openvino as ov
    import torch

    if not path.is_file():
        with torch.no_grad():
            model = ov.convert_model(module, example_input=example)
        ov.save_model(model, str(path), compress_to_fp16=False)
    return ov.Core().read_model(str(path))


def quantized(model: Any, inputs: list[list[np.ndarray]], path: Path, transformer: bool) -> Any:
    import nncf
    import openvino as ov

    if not path.is_file():
        q = nncf.quantize(model, nncf.Dataset(inputs), subset_size=len(inputs), preset=nncf.QuantizationPreset.MIXED,
                          model_type=nncf.ModelType.TRANSFORMER if transformer else None)
        ov.save_model(q, str(path), compress_to_fp16=False)
    return ov.Core().read_model(str(path))


def compiled(model: Any, shapes: list[tuple[int, ...]], threads: int) -> tuple[Any, dict[str, int]]:
    import openvino as ov

    model = model.clone()
    model.reshape({i: list(s) for i, s in enumerate(shapes)})
    done = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                                                  "INFERENCE_NUM_THREADS": threads})
    kinds = Counter(op.get_rt_info()["primitiveType"].astype(str) for op in done.get_runtime_model().get_ordered_ops()
                    if op.get_rt_info()["layerType"].astype(str) == "Convolution")
    return done.create_infer_request(), dict(kinds)


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("folder", "cache", "prompt"):
        parser.add_argument(f"--{name}", required=True)
    for name in ("seed", "size", "steps", "repeats", "threads"):
        parser.add_argument(f"--{name}", type=int, required=True)
    parser.add_argument("--guidance", type=float, required=True)
    args = parser.parse_args()

    import nncf
    import openvino
    import torch
    from diffusers import StableDiffusionPipeline

    torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    pipe = StableDiffusionPipeline.from_pretrained(args.folder, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    unet, decoder = pipe.unet, pipe.vae.decoder
    unet_call, decoder_call = unet.forward, decoder.forward
    width = unet.config.cross_attention_dim

    class Plain(torch.nn.Module):  # the UNet's call with positional tensors, as Easel traces it
        def __init__(self) -> None:
            super().__init__()
            self.unet = unet

        def forward(self, sample: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
            return self.unet(sample, t, text, return_dict=False)[0]

    t0 = time.perf_counter()
    unet_ir = convert(Plain().eval(), (torch.randn(2, 4, 8, 8), torch.tensor(999.0), torch.randn(2, 77, width)),
                      cache / "unet.xml")
    decoder_ir = convert(decoder.eval(), (torch.randn(1, 4, 8, 8),), cache / "decoder.xml")
    converted = time.perf_counter() - t0

    def job(prompt: str, seed: int) -> np.ndarray:
        image = pipe(prompt, width=args.size, height=args.size, num_inference_steps=args.steps,
                     guidance_scale=args.guidance, generator=torch.Generator("cpu").manual_seed(seed),
                     output_type="np").images[0]
        return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)

    unet_inputs: list[list[np.ndarray]] = []
    decoder_inputs: list[list[np.ndarray]] = []

    def recording_unet(sample: torch.Tensor, t: Any, encoder_hidden_states: torch.Tensor, **k: Any) -> Any:
        unet_inputs.append([sample.numpy().copy(), np.asarray(float(t), np.float32), encoder_hidden_states.numpy().copy()])
        return unet_call(sample, t, encoder_hidden_states, **k)

    def recording_decoder(z: torch.Tensor, *a: Any) -> Any:
        decoder_inputs.append([z.numpy().copy()])
        return decoder_call(z, *a)

    unet.forward, decoder.forward = recording_unet, recording_decoder
    for seed in CALIBRATION[1]:
        job(CALIBRATION[0], seed)
    del unet.forward, decoder.forward
    t0 = time.perf_counter()
    unet_q = quantized(unet_ir, unet_inputs, cache / "unet-int8.xml", transformer=True)
    decoder_q = quantized(decoder_ir, decoder_inputs, cache / "decoder-int8.xml", transformer=False)
    quantizing = time.perf_counter() - t0

    latent = args.size // 8
    unet_shapes = [(2, 4, latent, latent), (), (2, 77, width)]
    decoder_shapes = [(1, 4, latent, latent)]
    unet_f32, _ = compiled(unet_ir, unet_shapes, args.threads)
    unet_i8, unet_kinds = compiled(unet_q, unet_shapes, args.threads)
    decoder_f32, _ = compiled(decoder_ir, decoder_shapes, args.threads)
    decoder_i8, decoder_kinds = compiled(decoder_q, decoder_shapes, args.threads)

    def through(request: Any) -> Any:
        def run(*tensors: Any) -> torch.Tensor:
            request.infer([torch.as_tensor(x, dtype=torch.float32).contiguous().numpy() for x in tensors])
            return torch.from_numpy(request.get_output_tensor(0).data.copy())
        return run

    def swapped(u: Any, d: Any) -> None:
        """The UNet and decoder calls through these infer requests (torch's own for None)."""
        unet.__dict__.pop("forward", None)
        decoder.__dict__.pop("forward", None)
        if u is not None:
            unet.forward = lambda sample, t, encoder_hidden_states, **k: (
                through(u)(sample, torch.as_tensor(t, dtype=torch.float32).reshape(()), encoder_hidden_states),)
            decoder.forward = lambda z, *a: through(d)(z)

    variants = {"torch fp32": (None, None), "OpenVINO f32": (unet_f32, decoder_f32),
                "OpenVINO f32 UNet, int8 decoder": (unet_f32, decoder_i8),
                "OpenVINO int8 UNet and decoder": (unet_i8, decoder_i8)}
    times: dict[str, list[float]] = {name: [] for name in variants}
    pictures: dict[str, np.ndarray] = {}
    for turn in range(args.repeats + 1):  # the first turn warms up
        for name, (u, d) in variants.items():
            swapped(u, d)
            t = time.perf_counter()
            pictures[name] = job(args.prompt, args.seed)
            if turn:
                times[name].append(time.perf_counter() - t)
    swapped(None, None)
    ref = pictures["torch fp32"].astype(np.float64)
    pixels = {}
    for name, picture in pictures.items():
        mse = float(((picture - ref) ** 2).mean())
        pixels[name] = {"mean": float(np.abs(picture - ref).mean()),
                        "psnr": None if mse == 0 else float(10 * np.log10(255 ** 2 / mse))}
    print(json.dumps({"times": times, "pixels": pixels, "convert_s": round(converted, 1),
                      "quantize_s": round(quantizing, 1), "unet_kernels": unet_kinds, "decoder_kernels": decoder_kinds,
                      "openvino": openvino.__version__, "nncf": nncf.__version__}))


if __name__ == "__main__":
    main()
