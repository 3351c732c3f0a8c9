"""Full-size SD1.5 on the CPU: Easel vs raw diffusers, the speed options, ComfyUI, cold start.

``make bench-full`` = ``python -m bench.full``. The model is ``bench.gpu``'s SD1.5-shaped pipeline (UNet
320-640-1280-1280, a CLIP-L-sized text encoder, the SD VAE, Euler) with random weights, built once and
kept in ``$EASEL_BENCH_CACHE`` (default ``~/.cache/easel-bench``), keyed by the diffusers and transformers
versions; nothing is downloaded. Every job is txt2img at 512², Euler, cfg 7, 2 steps (``--steps``).

Sections (``--only``):

* ``jobs``: raw diffusers (``StableDiffusionPipeline``, the same folder and dtype) against Easel through
  the real server and the plugins' client (raw RGBA, step previews on), with Easel's defaults and with
  each speed option on or off, all in paired turns. Rows: seconds, the speed-up over raw diffusers
  (median of the per-turn ratios) and how far the pixels are from raw diffusers'.
* ``parts``: what a job is made of on a CPU: the text encoder, one UNet step (a batch of 2 with CFG) and
  the VAE decode, each contiguous and channels_last, fp32 and bf16 weights, and fp32 weights under bf16
  autocast, in turns.
* ``fp32``: ``jobs`` for a CPU without native bf16 (avx512f/vnni only), where ``--dtype auto`` is float32 and
  ``--channels-last auto`` off: raw diffusers fp32 against Easel's defaults forced to fp32; the notes split
  Easel's wait into the engine call and the rest (prepare, compose, encode, transport).
* ``cold``: ``easel serve`` as a painter starts it: process start to listening, to the model loaded, to
  the first result.
* ``openvino``: the same job in OpenVINO f32 through optimum-intel, in a venv of its own
  (``bench/openvino_venv.py``), its pixels held to the tolerance against raw diffusers fp32.
* ``int8``: int8 in OpenVINO (NNCF post-training quantization, VNNI kernels only) against torch and OpenVINO
  fp32 in paired turns, with each one's pixels against torch fp32 (``bench/openvino_int8.py``, the same venv).
* ``comfyui``: the same job in ComfyUI over its HTTP API when ``$EASEL_BENCH_COMFYUI`` names an install
  (``bench/comfyui.py``).

Notes carry the CPU's bf16 flags and the machine load; the torch thread count is ``--threads`` (default:
one per core, the fastest on an idle machine; on a busy 2-core machine 1 is faster).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from . import fixtures
from .common import Row, bf16_flags, check, interleaved, loadavg, med, paired_ratio
from .fullsize import GUIDANCE, SEED, SIZE, context, easel_job, model_folder, threads, tiny_decoder_root

SECTIONS = ["jobs", "fp32", "parts", "cold", "openvino", "int8", "comfyui"]
TARGET = ">= 1.3"  # the issue's goal: Easel this much faster than raw diffusers end to end
FP32_TARGET = ">= 1.3"  # without bf16: Easel's defaults this much faster than raw diffusers fp32
TINY_TARGET = ">= 1.6"  # and with the tiny decoder
#: Easel configurations timed against raw diffusers: label -> Engine options
VARIANTS: dict[str, dict[str, Any]] = {
    "easel (defaults)": {},
    "easel, channels_last off": {"channels_last": "off"},
}
COMPILED = {"easel --compile": {"compile": True}}


def fp32_variants() -> dict[str, dict[str, Any]]:
    """The fp32 section's Easel configurations: the defaults (OpenVINO when the extra is installed) and torch
    alone."""
    from easel.server.engine.openvino_path import available

    out: dict[str, dict[str, Any]] = {"easel (defaults)": {}}
    if available():
        out["easel, --openvino off"] = {"openvino": "off"}
    return out


def tiny_variants() -> dict[str, dict[str, Any]]:
    """The defaults with the tiny decoder (a random-weight TAESD: its speed, not its pixels)."""
    return {"easel --decoder tiny": {"decoder": "tiny", "models_dir": str(tiny_decoder_root())}}


# ----------------------------------------------------------------------------- jobs


def raw_pipe(folder: Path, dtype: str) -> Any:
    import torch
    from diffusers import StableDiffusionPipeline

    from easel.server.engine.loading import _DTYPE_KW

    pipe = StableDiffusionPipeline.from_pretrained(folder, **{_DTYPE_KW: getattr(torch, dtype)})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def raw_job(pipe: Any, steps: int) -> np.ndarray:
    import torch

    out = pipe(fixtures.PROMPT, width=SIZE, height=SIZE, num_inference_steps=steps, guidance_scale=GUIDANCE,
               generator=torch.Generator("cpu").manual_seed(SEED), output_type="np").images[0]
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)  # diffusers' own numpy_to_pil rounding


def pixel_note(got: np.ndarray, ref: np.ndarray) -> str:
    """How far ``got`` is from ``ref``: max and mean absolute difference (0-255) and PSNR."""
    diff = np.abs(got.astype(np.int16) - ref.astype(np.int16))
    if not diff.any():
        return "pixels identical to raw diffusers"
    mse = float((diff.astype(np.float64) ** 2).mean())
    return (f"pixels vs raw diffusers: max {int(diff.max())}, mean {diff.mean():.2f}, "
            f"PSNR {10 * np.log10(255 ** 2 / mse):.1f} dB")


@contextlib.contextmanager
def easel_server(folder: Path, dtype: str, options: dict[str, Any]) -> Iterator[str]:
    from easel.server.engine import Engine

    engine = Engine([str(folder)], device="cpu", dtype=dtype, **options)
    engine.load(None)
    try:
        with fixtures.serve(engine) as (url, _):
            yield url
    finally:
        engine.close()


def job_rows(folder: Path, dtype: str, steps: int, repeats: int, compiled: bool,
             variants: dict[str, dict[str, Any]] | None = None, target: str = TARGET,
             images: dict[str, np.ndarray] | None = None) -> list[Row]:
    """Raw diffusers and each Easel variant in turns; times, speed-ups and pixel distance. ``images`` gets
    each run's last picture (``raw diffusers`` too)."""
    variants = variants or {**VARIANTS, **(COMPILED if compiled else {})}
    before = loadavg()
    pipe = raw_pipe(folder, dtype)
    last: dict[str, np.ndarray] = {} if images is None else images
    previews: dict[str, list[float]] = {}
    outside: dict[str, list[float]] = {}  # per Easel job: the client's wait minus the engine call
    with contextlib.ExitStack() as stack:
        fns = {"raw diffusers": lambda: last.__setitem__("raw diffusers", raw_job(pipe, steps))}
        for label, options in variants.items():
            url = stack.enter_context(easel_server(folder, dtype, options))
            firsts = previews[label] = []
            rest = outside[label] = []

            def job(label: str = label, url: str = url, firsts: list[float] = firsts, rest: list[float] = rest) -> None:
                firsts.clear()
                timings: dict[str, float] = {}
                last[label] = easel_job(url, str(folder), steps, firsts, timings)
                rest.append(timings["wall_s"] - timings.get("run_s", 0.0) - timings.get("second_pass_s", 0.0))

            fns[label] = job
        t0 = time.perf_counter()
        times = interleaved(fns, repeats)
        print(f"  jobs ({dtype}): {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    what = f"SD1.5 512², {steps} steps, cfg {GUIDANCE:g}" + (", fp32 (a CPU without bf16)" if dtype == "float32" else "")
    note = f"{context(dtype)}; load {before} before, {loadavg()} after"
    raw = times["raw diffusers"]
    rows = [Row("full", f"raw diffusers {what}", med(raw), "s", note=note)]
    for label in variants:
        first = f"first step preview after {previews[label][0]:.1f} s; " if previews[label] else ""
        rows.append(Row("full", f"{label} {what}", med(times[label]), "s",
                        note=f"{first}outside the engine calls {1000 * med(outside[label][-repeats:]):.0f} ms "
                             f"(prepare, compose, encode, transport); {pixel_note(last[label], last['raw diffusers'])}"))
        rows.append(check("full", f"{label}{' fp32' if dtype == 'float32' else ''}: speed-up over raw diffusers",
                          paired_ratio(raw, times[label]), "×", target, f"median of {repeats} paired turns; {note}"))
    return rows


# ----------------------------------------------------------------------------- parts


@contextlib.contextmanager
def winograd(module: Any) -> Iterator[None]:
    """``module``'s 3×3 stride-1 convolutions through NNPACK's Winograd kernels for the duration (the
    bench's try of fewer multiplications in float32; torch ships NNPACK but calls it only for some shapes)."""
    import torch

    torch.backends.nnpack.is_available()  # initialises NNPACK: its convolution fails before that
    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)
             and m.stride == (1, 1) and m.groups == 1 and m.padding_mode == "zeros"]
    for m in convs:
        m.forward = lambda x, m=m: torch._nnpack_spatial_convolution(x, m.weight, m.bias, list(m.padding))
    try:
        yield
    finally:
        for m in convs:
            del m.forward


def winograd_pixels(pipe: Any, latents: Any) -> str:
    """How far the decode through ``winograd`` is from torch's own, in 0-255 levels."""
    import torch

    def decode() -> np.ndarray:
        with torch.no_grad():
            image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
        return ((image.clamp(-1, 1) / 2 + 0.5) * 255).round().numpy()

    plain = decode()
    with winograd(pipe.vae):
        diff = np.abs(decode() - plain)
    return f"pixels vs fp32: max {diff.max():.0f}, mean {diff.mean():.4f}"


def part_rows(folder: Path, repeats: int) -> list[Row]:
    """Text encoder, one UNet step and the VAE decode: each layout/dtype variant, in turns."""
    import torch

    before = loadavg()
    pipes = {"bf16": raw_pipe(folder, "bfloat16"), "fp32": raw_pipe(folder, "float32")}
    latents = torch.randn(2, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    text = torch.randn(2, 77, 768, generator=torch.Generator().manual_seed(1))
    ids = pipes["bf16"].tokenizer([fixtures.PROMPT] * 2, padding="max_length", max_length=77,
                                  return_tensors="pt").input_ids

    def layout(pipe: Any, channels_last: bool) -> None:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        pipe.unet.to(memory_format=fmt)
        pipe.vae.to(memory_format=fmt)

    def part(name: str, weights: str, channels_last: bool, autocast: bool = False, nnpack: bool = False) -> Any:
        pipe = pipes[weights]
        dtype = pipe.unet.dtype

        def call() -> None:
            layout(pipe, channels_last)
            ctx = torch.autocast("cpu", torch.bfloat16) if autocast else contextlib.nullcontext()
            with torch.no_grad(), ctx, winograd(pipe.vae) if nnpack else contextlib.nullcontext():
                if name == "text encoder":
                    pipe.text_encoder(ids)
                elif name == "UNet step (batch 2, CFG)":
                    pipe.unet(latents.to(dtype), 999, text.to(dtype))
                else:
                    pipe.vae.decode(latents[:1].to(dtype) / pipe.vae.config.scaling_factor)

        return call

    rows: list[Row] = []
    for name in ("text encoder", "UNet step (batch 2, CFG)", "VAE decode 512²"):
        variants = {"bf16": part(name, "bf16", False), "bf16 channels_last": part(name, "bf16", True),
                    "fp32": part(name, "fp32", False), "fp32 channels_last": part(name, "fp32", True),
                    "fp32 + bf16 autocast": part(name, "fp32", False, True)}
        if name == "text encoder":  # no convolutions: the layout does not apply
            variants = {k: v for k, v in variants.items() if "channels_last" not in k}
        if name.startswith("VAE"):  # the decoder's 3×3 convolutions as Winograd (fewer multiplications)
            variants["fp32 Winograd (NNPACK)"] = part(name, "fp32", False, nnpack=True)
        times = interleaved(variants, repeats)
        base = times["bf16"]
        for label, series in times.items():
            note = "" if label == "bf16" else f"{paired_ratio(base, series):.2f}× the speed of bf16 contiguous"
            rows.append(Row("full", f"{name}: {label}", med(series), "s", note=note))
            if "Winograd" in label:
                rows[-1].note += f"; {paired_ratio(times['fp32'], series):.2f}× fp32; {winograd_pixels(pipes['fp32'], latents[:1])}"
    for pipe in pipes.values():
        layout(pipe, False)
    rows[-1].note += f"; {threads()} thread(s), CPU bf16: {bf16_flags()}; load {before} before, {loadavg()} after"
    return rows


# ----------------------------------------------------------------------------- ComfyUI


def comfyui_rows(steps: int, repeats: int) -> list[Row]:
    """The same job in ComfyUI (its own dtype choice on the CPU) over its API: median after a warm-up."""
    from . import comfyui

    install = comfyui.find()
    if install is None:
        return [Row("full", "ComfyUI", None, "", note="skipped: set EASEL_BENCH_COMFYUI to a ComfyUI folder "
                                                        "(docs/performance.md)")]
    folder = model_folder()
    checkpoint = comfyui.checkpoint(folder, folder.with_name(folder.name + "-comfyui.safetensors"))
    before = loadavg()
    times = []
    with comfyui.serve(install, checkpoint, threads()) as server:
        for i in range(repeats + 1):
            seconds, _ = server.txt2img(fixtures.PROMPT, SEED + i, steps, GUIDANCE, SIZE)
            times.append(seconds)
        dtype, peak = server.weight_dtype(), server.peak_rss() / 2**30
    return [Row("full", f"ComfyUI SD1.5 512², {steps} steps, cfg {GUIDANCE:g}", med(times[1:]), "s",
                note=f"UNet weights {dtype}, peak RSS {peak:.1f} GiB; {threads()} thread(s), CPU bf16: "
                     f"{bf16_flags()}; load {before} before, {loadavg()} after")]


# ----------------------------------------------------------------------------- OpenVINO


def openvino_section(steps: int, repeats: int, reference: np.ndarray | None) -> list[Row]:
    """OpenVINO f32 on the same job; ``reference``: raw diffusers fp32's picture (made here when None)."""
    from . import openvino_venv as openvino

    if openvino.disabled():
        return openvino.openvino_rows(Path(), np.zeros(0), fixtures.PROMPT, SEED, SIZE, steps, GUIDANCE, repeats,
                                      threads())
    folder = model_folder()
    if reference is None:
        reference = raw_job(raw_pipe(folder, "float32"), steps)
    return openvino.openvino_rows(folder, reference, fixtures.PROMPT, SEED, SIZE, steps, GUIDANCE, repeats, threads())


# ----------------------------------------------------------------------------- main


def run(quick: bool = False, only: list[str] | None = None, dtype: str = "bfloat16", steps: int = 2,
        compiled: bool = False) -> list[Row]:
    repeats = 2 if quick else 3
    rows: list[Row] = []
    fp32: dict[str, np.ndarray] = {}  # the fp32 section's pictures: raw diffusers' is OpenVINO's reference
    for name in only or SECTIONS:
        t0 = time.perf_counter()
        print(f"[full/{name}] running…", file=sys.stderr, flush=True)
        if name == "jobs":
            rows += job_rows(model_folder(), dtype, steps, repeats, compiled)
        elif name == "fp32":  # two paired runs: four full-size fp32 models at once would not fit in 24 GB
            rows += job_rows(model_folder(), "float32", steps, repeats, False, fp32_variants(), FP32_TARGET, fp32)
            rows += job_rows(model_folder(), "float32", steps, repeats, False, tiny_variants(), TINY_TARGET)
        elif name == "openvino":
            rows += openvino_section(steps, repeats, fp32.get("raw diffusers"))
        elif name == "int8":
            from . import openvino_venv

            folder = Path() if openvino_venv.disabled() else model_folder()  # skipped: no model built
            rows += openvino_venv.int8_rows(folder, fixtures.PROMPT, SEED, SIZE, steps, GUIDANCE, repeats, threads())
        elif name == "parts":
            rows += part_rows(model_folder(), repeats)
        elif name == "cold":
            from .coldstart import cold_rows

            rows += cold_rows(model_folder(), dtype, 2, compiled)
        elif name == "comfyui":
            rows += comfyui_rows(steps, repeats)
        print(f"[full/{name}] {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    import json

    from .__main__ import _json_row, markdown, print_table
    from .common import machine, setup_threads

    parser = argparse.ArgumentParser(prog="python -m bench.full", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--compile", action="store_true", help="also time `easel serve --compile` (minutes "
                        "of compiling on the first start)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: one "
                        "per core)")
    parser.add_argument("--json", type=Path, default=Path("artifacts/bench-full.json"))
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    fixtures.quiet()
    setup_threads(args.threads)
    started = time.perf_counter()
    rows = run(args.quick, args.only, args.dtype, args.steps, args.compile)
    print_table(rows)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": machine(), "bf16": bf16_flags(), "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                                     "seconds": round(time.perf_counter() - started, 1),
                                     "rows": [_json_row(r) for r in rows]}, indent=1))
    print(f"\nwrote {args.json}")
    if args.markdown:
        args.markdown.write_text(markdown(rows))
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
