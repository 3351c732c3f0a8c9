"""``easel serve``: load the models and serve the websocket protocol until Ctrl+C."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from .. import __version__
from ..server.security import TOKEN_ENV, Security, SecurityError
from ..server.settings import CHANNELS_LAST
from . import library
from .frontdoor import run_front_door
from .library import engine_kwargs
from .progress import ProgressBar

DEMO_MODEL = "easel-demo"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="start the websocket server")
    p.add_argument("--model", action="append", metavar="M",
                   help="hub id, diffusers folder or .safetensors/.ckpt file (repeat to serve several; "
                        f"the first is the default). Default: the built-in toy model {DEMO_MODEL!r}")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--device", default="auto", metavar="D",
                   help="auto, cpu, cuda, cuda:N or mps; a GPU list (cuda:0,cuda:1) runs one worker per GPU, "
                        "each with its own models (docs/scaling.md)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="workers on the one device, each with its own copy of the models (mainly for tests on "
                        "the CPU); the fair queue feeds them all")
    p.add_argument("--ray", metavar="ADDRESS",
                   help="run the engine in Ray Serve replicas: 'local' starts Ray on this machine (127.0.0.1), an "
                        "address (ray://head:10001 or head:6379) joins a cluster; needs pip install 'easel[ray]' "
                        "(docs/scaling.md)")
    p.add_argument("--replicas", default="1", metavar="N|MIN:MAX",
                   help="with --ray: engine replicas (one GPU each when the cluster has GPUs); MIN:MAX autoscales")
    p.add_argument("--ray-timeout", type=float, default=120.0, metavar="SECONDS",
                   help="with --ray: a replica silent this long (no step, no load progress) is given up on and the "
                        "job sent once more")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    p.add_argument("--max-loaded", type=int, default=2, metavar="N", help="models kept in memory (LRU)")
    p.add_argument("--attention-slicing", action="store_true", help="lower memory, slower")
    p.add_argument("--vae-tiling", action="store_true", help="decode big images in tiles")
    p.add_argument("--cpu-offload", nargs="?", const="model", choices=["none", "model", "sequential"],
                   metavar="MODE", help="CPU offload (needs an accelerator): model (the default when given "
                                        "alone) or sequential (per layer: least memory, slowest)")
    p.add_argument("--no-sd3-t5", action="store_true", help="load SD 3/3.5 without their T5 encoder "
                                                              "(about 9.5 GB less; prompts followed less closely)")
    p.add_argument("--channels-last", default="auto", choices=CHANNELS_LAST,
                   help="convolution weights in channels-last layout: auto = on for bfloat16 on the CPU, where it "
                        "is faster (docs/performance.md)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model: faster steps after the first job at each size, which compiles "
                        "for minutes on a CPU (kernels are cached for later starts; docs/performance.md)")
    p.add_argument("--models-dir", action="append", type=Path, metavar="DIR",
                   help="models folder (A1111/Forge, ComfyUI or flat; repeat for several): its checkpoints, "
                        "diffusers folders, LoRAs and ControlNets are offered, rescanned as clients ask; local "
                        "model paths must lie inside it")
    p.add_argument("--no-preload", action="store_true", help="load the default model on first use")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for inference (default: torch's choice, one per core; on a busy "
                        "2-core machine 1 was measured 3-6x faster, docs/performance.md)")
    p.add_argument("--output-dir", type=Path, help="where finished results are kept (default: user data dir)")
    p.add_argument("--keep-results", type=int, default=200, metavar="N", help="results kept until acknowledged")
    p.add_argument("--keep-days", type=float, default=7.0, help="results older than this are deleted")
    p.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                   help=f"require this token from clients (default: ${TOKEN_ENV}); needed off loopback")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="let browser pages from ORIGIN connect (none by default)")
    p.add_argument("--loras-dir", type=Path, metavar="DIR", help="folder of .safetensors LoRAs offered to clients")
    p.add_argument("--control-model", action="append", default=[], metavar="REF",
                   help="ControlNet (hub id or folder) offered to clients; repeat for several")
    p.add_argument("--refiner", metavar="REF", help="SDXL refiner model (hub id, folder or file) for refiner jobs")
    p.add_argument("--safety-checker", nargs="?", const=True, default=False, metavar="REF",
                   help="check results with the SD safety checker (off by default; REF: a folder or hub id, "
                        "default CompVis/stable-diffusion-safety-checker); flagged images come back black")
    p.add_argument("--idle-exit", type=float, metavar="SECONDS",
                   help="exit after SECONDS with no client connected and no job (servers started by GIMP)")
    p.add_argument("--parent-pid", type=int, metavar="PID", help="exit when process PID ends (the editor that "
                   "started this server)")
    p.add_argument("--status-lines", action="store_true",
                   help="print start-up progress as 'easel-status: {json}' lines (for the editor plugins)")
    p.add_argument("-v", "--verbose", action="store_true")
    library.prepare_serve_parser(p)  # --config / --print-config: flags win over the config file
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    done = library.apply_settings(args)
    if done is not None:
        return done
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    models = args.model or ([] if args.models_dir else [DEMO_MODEL])  # with folders: their models
    security = Security(token=args.token, allowed_origins=args.allow_origin)
    try:
        security.check_bind(args.host)
    except SecurityError as exc:
        print(f"easel serve: {exc}", file=sys.stderr)
        return 2
    if args.ray:
        from .serve_ray import cmd_serve_ray

        return cmd_serve_ray(args, models, security)
    print(f"Easel {__version__}: loading the engine (torch, diffusers)…", flush=True)
    from ..server.lifetime import StatusLines

    status = StatusLines(args.status_lines)
    status.say("engine", message="loading torch and diffusers")
    from ..server.app import App
    from ..server.engine import Engine
    from ..server.engine.types import EngineError

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    try:
        engines = [Engine(**{**engine_kwargs(args, models), "device": device}) for device in worker_devices(args)]
    except EngineError as exc:
        print(f"easel serve: {exc}", file=sys.stderr)
        return 2
    engine = engines[0]
    if engine.model_info(None).id == DEMO_MODEL:
        from ..server.demo.model import TOY_NOTICE

        print(TOY_NOTICE, flush=True)
    print(f"device {', '.join(e.device for e in engines)}, dtype {engine.dtype}"
          + (f", {len(engines)} workers" if len(engines) > 1 else "") + "; models: "
          + ", ".join(m.id for m in engine.models()), flush=True)
    extras = [f"{len(engine.loras())} LoRAs" if args.loras_dir or args.models_dir else "",
              "control models: " + ", ".join(engine.control_models()) if args.control_model else "",
              "refiner: " + ", ".join(engine.refiners()) if args.refiner else "",
              "safety checker on" if engine.safety_checker else ""]
    if any(extras):
        print("; ".join(e for e in extras if e), flush=True)

    def make_app(store: Any) -> Any:
        app = App(engines, store=store, security=security)
        if not args.no_preload:  # while the socket already listens; a job that comes meanwhile waits for it
            preload(app.workers, status)
        return app

    try:
        return run_front_door(args, make_app, status)
    finally:
        for each in engines:
            each.close()


def preload(workers: list[Any], status: Any) -> None:
    """Load every worker's default model in the background, with a progress bar and status lines; say when
    it is ready, or what failed (the server keeps serving: a job for that model reports the error)."""
    import threading

    from ..server.engine.types import Progress

    bar = ProgressBar("loading")

    def on_load(p: Progress) -> None:
        bar.update(p.step, p.total, p.message or p.stage)
        status.say("load", p.step, p.total, p.message or p.stage)

    loads = [worker.preload(None, on_load) for worker in workers]

    def report() -> None:
        for load in loads:
            load.wait(lambda p: None, lambda: False)
        bar.done()
        failed = next((load.error for load in loads if load.error is not None), None)
        if failed is not None:
            print(f"easel serve: {failed} (jobs for this model will report this; the server keeps serving)",
                  file=sys.stderr, flush=True)
        else:
            print("the default model is loaded: ready for jobs", flush=True)

    threading.Thread(target=report, name="easel-preload-report", daemon=True).start()


def worker_devices(args: argparse.Namespace) -> list[str]:
    """One device per worker: the ``--device`` list, or ``--workers N`` times the one device."""
    from ..server.engine.device import parse_devices
    from ..server.engine.types import EngineError

    devices = parse_devices(args.device)
    workers = getattr(args, "workers", None)
    workers = 1 if workers is None else workers
    if workers < 1:
        raise EngineError(f"--workers must be at least 1 (got {workers})", field="workers")
    if len(devices) > 1:
        if workers not in (1, len(devices)):
            raise EngineError(f"--workers {workers} does not match the {len(devices)} devices of --device "
                              f"{args.device}; a device list runs one worker per device", field="workers")
        return devices
    return devices * workers
