"""GPU: full-size SD1.5-shaped and SD-turbo-shaped random-weight models, fp16, 512², on CUDA.

Skipped with a message when torch sees no CUDA device. The models are built here with the real
architectures (SD 1.5: UNet 320-640-1280-1280, CLIP-L text encoder, SD VAE; SD-turbo: the SD 2.1
UNet with linear projections and 1024-d cross-attention, a 23-layer OpenCLIP-H-sized text encoder,
trailing Euler-ancestral) and random weights, saved in fp16 to a temporary folder, then served by an
Engine on ``cuda`` (fp16) and loaded a second time as raw diffusers pipelines. The tokenizer is the
tests' byte-level one, so only the text encoder's vocabulary is smaller than the real one.

Rows per model: the overhead ratio (as in the overhead section: `easel generate` through the server
vs the same raw diffusers call), steps/s (engine, no previews) and the time from submitting a job
to its first step preview, through the server. ``EASEL_BENCH_GPU_DRYRUN=1`` runs the same code on
the CPU with the tiny SD in place of the full-size models (to check the section without a GPU).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from . import fixtures, overhead, previews
from .common import Row

DRYRUN = os.environ.get("EASEL_BENCH_GPU_DRYRUN") == "1"


def _text_encoder(tok: Any, hidden: int, layers: int, heads: int, act: str, projection: int | None = None) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=4 * hidden,
                            num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=77,
                            hidden_act=act, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                            pad_token_id=tok.pad_token_id, **({"projection_dim": projection} if projection else {}))
    return CLIPTextModel(config)


def build(folder: Path | None, turbo: bool, device: str = "cuda") -> Any:
    """Save a random-weight SD1.5-shaped (or SD-turbo-shaped) pipeline in fp16 to ``folder``.

    Returns the folder, or the pipeline itself (fp32, on ``device``) when ``folder`` is None."""
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel

    sys.path.insert(0, str(fixtures.REPO / "tests"))
    from helpers.tiny_models import _scheduler, _tokenizer

    tok = _tokenizer(fixtures.tmpdir("tokenizer"))
    torch.manual_seed(0)
    with torch.device(device):  # random init on the GPU: seconds instead of a minute
        unet = UNet2DConditionModel(
            sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=1024 if turbo else 768, attention_head_dim=(5, 10, 20, 20) if turbo else 8,
            use_linear_projection=turbo)
        vae = AutoencoderKL(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
                            up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=2, latent_channels=4,
                            sample_size=512, scaling_factor=0.18215)
        text = (_text_encoder(tok, 1024, 23, 16, "gelu", 512) if turbo
                else _text_encoder(tok, 768, 12, 12, "quick_gelu"))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet,
                                   scheduler=_scheduler("euler_a_trailing" if turbo else "euler"),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if folder is None:
        return pipe
    pipe.to(torch.float16).save_pretrained(folder)
    return str(folder)


def specs() -> list[fixtures.ModelSpec]:
    """(SD1.5-shaped, SD-turbo-shaped) specs; in a dry run the tiny SD twice, on the CPU."""
    import torch

    out = []
    for name, turbo in (("sd15-shaped", False), ("sd-turbo-shaped", True)):
        if DRYRUN:
            folder = fixtures.tiny_sd(512).ref
        else:
            folder = build(Path(fixtures.tmpdir("gpu-models")) / name, turbo)

        def load_raw(folder: str = folder) -> Any:
            from diffusers import DiffusionPipeline

            if DRYRUN:
                return DiffusionPipeline.from_pretrained(folder)
            return DiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float16).to("cuda")

        out.append(fixtures.ModelSpec(name, folder, 512, 1 if turbo else 20, 0.0 if turbo else 7.5, load_raw))
    return out


def first_preview(url: str, steps: int, repeats: int) -> float:
    """Median seconds from submitting a txt2img job to its first step preview, through the server."""
    from easel.client.connection import Client, new_job_id
    from easel.client.protocol import GenerateRequest

    times = []
    with Client(url, image_format="rgba", client_name="easel-plugin/bench") as client:
        for _ in range(repeats + 1):
            t0, first = time.perf_counter(), []

            def seen(p, t0=t0, first=first) -> None:
                if p.preview is not None and not first:
                    first.append(time.perf_counter() - t0)

            client.generate(GenerateRequest(job=new_job_id(), prompt=fixtures.PROMPT, steps=steps, seed=3),
                            on_progress=seen)
            if first:
                times.append(first[0])
    return statistics.median(times[1:] or times)


def run(quick: bool = False) -> list[Row]:
    import torch

    if not torch.cuda.is_available() and not DRYRUN:
        message = f"skipped: no CUDA device (torch {torch.__version__}); run `make bench` on a machine with a GPU"
        print(f"  gpu: {message}", file=sys.stderr, flush=True)
        return [Row("gpu", "SD1.5- and SD-turbo-shaped fp16 models, 512²", None, "", note=message)]
    device, dtype = ("cpu", "float32") if DRYRUN else ("cuda", "float16")
    repeats = 3 if quick or DRYRUN else 10
    tag = " (dry run on the CPU, tiny SD)" if DRYRUN else ""
    rows: list[Row] = []
    for spec in specs():
        engine = fixtures.engine_for(spec, device, dtype)
        steps_per_s = 1 / previews.step_interval(engine, 512, 4 if DRYRUN else 20, 2)
        with fixtures.serve(engine) as (url, _):
            pair = overhead.Pair(spec, url, spec.steps)
            for mode in ("txt2img", "img2img"):
                # img2img at strength 0.6 needs 2 steps for 1 denoising step (the engine raises 1 to 2)
                pair.steps = spec.steps if mode == "txt2img" else max(2, spec.steps)
                row = overhead.compare(pair, mode, repeats)
                row.section, row.name = "gpu", row.name + tag
                rows.append(row)
            ttfp = first_preview(url, spec.steps, repeats)
            del pair
        rows.append(Row("gpu", f"{spec.name} 512²: steps/s{tag}", steps_per_s, "it/s",
                        note=f"{dtype} on {engine.device}, guidance {spec.guidance}, no previews"))
        rows.append(Row("gpu", f"{spec.name} 512²: time to first preview{tag}", 1000 * ttfp, "ms",
                        note="from submit to the first step preview, through the server"))
        engine.close()
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows
