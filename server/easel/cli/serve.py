"""``easel serve``: load the models and serve the websocket protocol until Ctrl+C."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from .. import __version__
from ..server.demo import DEMO_ID
from ..server.security import Security, SecurityError
from ..server.settings import engine_kwargs
from . import library
from .frontdoor import check_listen, run_front_door
from .progress import ProgressBar


def add_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="start the websocket server",
                       description=f"Serve models over websockets. With no --model and no --models-dir: the "
                                   f"built-in toy model {DEMO_ID!r}. Flags win over the config file.")
    library.add_setting_flags(p)  # declared in server/settings.py, with --config and --print-config
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    done = library.apply_settings(args)
    if done is not None:
        return done
    settings = args.settings
    logging.basicConfig(level=logging.INFO if settings.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    models = settings.models or ([] if settings.models_dirs else [DEMO_ID])  # with folders: their models
    security = Security(token=settings.token, allowed_origins=settings.allow_origins)
    try:
        security.check_bind(settings.host)
    except SecurityError as exc:
        print(f"easel serve: {exc}", file=sys.stderr)
        return 2
    problem = check_listen(settings.host, settings.port)  # before anything loads
    if problem:
        print(f"easel serve: {problem}", file=sys.stderr)
        return 1
    if settings.ray:
        from .serve_ray import cmd_serve_ray

        return cmd_serve_ray(args, models, security)
    print(f"Easel {__version__}: loading the engine (torch, diffusers)…", flush=True)
    from ..server.lifetime import StatusLines

    status = StatusLines(settings.status_lines)
    status.say("engine", message="loading torch and diffusers")
    from ..server.app import App
    from ..server.engine import Engine
    from ..server.engine.types import EngineError

    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)

    try:
        engines = [Engine(**{**engine_kwargs(settings, models), "device": device})
                   for device in worker_devices(args)]
    except EngineError as exc:
        print(f"easel serve: {exc}", file=sys.stderr)
        return 2
    engine = engines[0]
    if engine.model_info(None).id == DEMO_ID:
        from ..server.demo.model import TOY_NOTICE

        print(TOY_NOTICE, flush=True)
    print(f"device {', '.join(e.device for e in engines)}, dtype {engine.dtype}"
          + (f", {len(engines)} workers" if len(engines) > 1 else "") + "; models: "
          + ", ".join(m.id for m in engine.models()), flush=True)
    extras = [f"{len(engine.loras())} LoRAs" if settings.loras_dir or settings.models_dirs else "",
              "control models: " + ", ".join(engine.control_models()) if settings.control_models else "",
              "refiner: " + ", ".join(engine.refiners()) if settings.refiner else "",
              "safety checker on" if engine.safety_checker else ""]
    if any(extras):
        print("; ".join(e for e in extras if e), flush=True)

    def make_app(store: Any) -> Any:
        app = App(engines, store=store, security=security)
        if settings.preload:  # while the socket already listens; a job that comes meanwhile waits for it
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
    workers = 1 if workers is None else workers  # at least 1: ServeSettings.workers declares low=1
    if len(devices) > 1:
        if workers not in (1, len(devices)):
            raise EngineError(f"--workers {workers} does not match the {len(devices)} devices of --device "
                              f"{args.device}; a device list runs one worker per device", field="workers")
        return devices
    return devices * workers
