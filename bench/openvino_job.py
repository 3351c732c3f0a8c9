"""The OpenVINO job of ``make bench-full``, run by the OpenVINO venv's python (bench/openvino_venv.py), never by Easel's.

Exports the diffusers folder with optimum-intel (``OVStableDiffusionPipeline.from_pretrained(folder,
export=True)``, weights not compressed) into ``--export`` once, then loads that, reshapes it statically to
the job's size, and runs the job (prompt, seed, size, steps, cfg; the folder's own scheduler) after one
warm-up. Prints one JSON line (times, scheduler, versions) and saves the last picture as HxWx3 uint8 .npy.
Only this venv's packages are imported: no easel, no bench.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("folder", "export", "prompt", "out"):
        parser.add_argument(f"--{name}", required=True)
    for name in ("seed", "size", "steps", "repeats", "threads"):
        parser.add_argument(f"--{name}", type=int, required=True)
    parser.add_argument("--guidance", type=float, required=True)
    parser.add_argument("--precision", default="f32", help="OpenVINO's INFERENCE_PRECISION_HINT (f32, bf16)")
    args = parser.parse_args()

    import openvino
    import torch
    from optimum.intel import OVStableDiffusionPipeline
    from optimum.intel.version import __version__ as optimum_intel

    torch.set_num_threads(args.threads)
    export = Path(args.export)
    t0 = time.perf_counter()
    if not (export / "model_index.json").is_file():
        partial = export.with_name(export.name + ".partial")
        pipe = OVStableDiffusionPipeline.from_pretrained(args.folder, export=True, compile=False, load_in_8bit=False)
        pipe.save_pretrained(partial)
        del pipe
        partial.rename(export)
    exported = time.perf_counter() - t0
    config = {"INFERENCE_PRECISION_HINT": args.precision, "INFERENCE_NUM_THREADS": str(args.threads)}
    pipe = OVStableDiffusionPipeline.from_pretrained(export, compile=False, ov_config=config)
    pipe.reshape(batch_size=1, height=args.size, width=args.size, num_images_per_prompt=1)
    pipe.compile()

    def job() -> np.ndarray:
        out = pipe(args.prompt, width=args.size, height=args.size, num_inference_steps=args.steps,
                   guidance_scale=args.guidance, generator=torch.Generator("cpu").manual_seed(args.seed),
                   output_type="np").images[0]
        return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)  # as bench.full.raw_job

    job()  # warm-up
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        image = job()
        times.append(time.perf_counter() - t)
    np.save(args.out, image)
    print(json.dumps({"times": times, "scheduler": type(pipe.scheduler).__name__, "precision": args.precision,
                      "openvino": openvino.__version__, "optimum_intel": optimum_intel,
                      "export_s": round(exported, 1)}))


if __name__ == "__main__":
    main()
