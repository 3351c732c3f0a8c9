"""``easel serve --ray ADDRESS|local [--replicas N|MIN:MAX]``: the front door here, the engine in Ray Serve."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .. import __version__
from ..server.settings import engine_kwargs
from .frontdoor import run_front_door


def cmd_serve_ray(args: argparse.Namespace, models: list[str], security: Any) -> int:
    """Serve the websocket protocol with the engine in Ray Serve replicas (docs/scaling.md)."""
    from ..server.engine.types import EngineError
    from ..server.rayserve.cluster import import_ray, parse_replicas

    try:
        replicas = parse_replicas(args.replicas)
        import_ray()
    except EngineError as exc:
        print(f"easel serve: {exc}", file=sys.stderr)
        return 2
    print(f"Easel {__version__}: starting the engine on Ray ({args.ray}, replicas {args.replicas})…", flush=True)
    from ..server.app import App
    from ..server.engine import Engine
    from ..server.lifetime import StatusLines
    from ..server.rayserve.cluster import RayCluster

    kwargs = engine_kwargs(args.settings, models)
    try:  # the front door's catalogue: model ids and features for checking requests; it loads no model
        catalog = Engine(**{**kwargs, "device": "cpu", "safety_checker": False})
    except EngineError as exc:
        print(f"easel serve: {exc}", file=sys.stderr)
        return 2
    try:  # in a child process, the Ray driver: this one outlives the cluster's head (docs/scaling.md)
        cluster = RayCluster.start(args.ray, replicas, kwargs, threads=args.threads)
    except Exception as exc:  # Ray's errors vary; say which address failed
        print(f"easel serve: could not start the engine on Ray at {args.ray!r}: {exc}", file=sys.stderr)
        catalog.close()
        return 2
    print(f"Ray Serve: {replicas[0]}..{replicas[1]} replicas; models: "
          + ", ".join(m.id for m in catalog.models()), flush=True)

    def make_app(store: Any) -> Any:
        workers = cluster.workers(catalog, start_timeout=max(args.ray_timeout, 60.0), step_timeout=args.ray_timeout)
        return App(store=store, security=security, workers=workers)

    try:
        return run_front_door(args, make_app, StatusLines(args.status_lines))
    finally:
        cluster.close()
        catalog.close()
