"""Join a Ray cluster (or start one bounded to this machine) and deploy the engine replicas.

    cluster = RayCluster.start("local", replicas=(2, 2), engine_kwargs={...})
    workers = cluster.workers(catalog_engine)   # RayWorker slots for the App
    ...
    cluster.close()
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

from ..engine.types import EngineError
from . import APP_NAME, INSTALL_HINT
from .worker import RayWorker

log = logging.getLogger(__name__)


def parse_replicas(text: str) -> tuple[int, int]:
    """``N`` (fixed) or ``MIN:MAX`` (autoscaling) -> (min, max); EngineError when not that."""
    low, _, high = str(text).partition(":")
    try:
        bounds = (int(low), int(high or low))
    except ValueError:
        raise EngineError(f"--replicas {text!r}: give a count (2) or a range MIN:MAX (1:4)", field="replicas") from None
    if bounds[0] < 1 or bounds[1] < bounds[0]:
        raise EngineError(f"--replicas {text!r}: need 1 <= MIN <= MAX", field="replicas")
    return bounds


def import_ray() -> tuple[Any, Any]:
    try:
        import ray
        from ray import serve
    except ImportError:
        raise EngineError(INSTALL_HINT, field="ray", code="unavailable") from None
    return ray, serve


@dataclass
class RayCluster:
    """Ray joined or started by this process, with the replicas deployed as Serve app ``easel``."""

    address: str
    replicas: tuple[int, int]
    handle: Any
    started_here: bool

    @classmethod
    def start(cls, address: str, replicas: tuple[int, int], engine_kwargs: dict[str, Any],
              threads: int | None = None, cpus: int | None = None) -> RayCluster:
        """``address``: ``local`` (a new Ray instance on 127.0.0.1 with ``cpus`` CPUs, default all of this
        machine's) or a cluster address (``ray://…`` or ``HOST:PORT``). One GPU per replica when the
        cluster has GPUs, else one CPU."""
        ray, serve = import_ray()
        from .replica import deployment

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        local = address == "local"
        if local:
            ray.init(address="local", num_cpus=cpus or os.cpu_count(), include_dashboard=False,
                     _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        try:
            gpus = ray.cluster_resources().get("GPU", 0)
            device = engine_kwargs.get("device", "auto")
            per_gpu = gpus > 0 and not str(device).startswith("cpu")
            kwargs = {**engine_kwargs, "device": "cuda" if per_gpu else device}
            serve.start(proxy_location="Disabled")
            app = deployment(kwargs.get("max_loaded", 2), replicas, num_gpus=1 if per_gpu else 0,
                             num_cpus=0 if per_gpu else 1).bind(kwargs, threads)
            handle = serve.run(app, name=APP_NAME, route_prefix=None)
        except BaseException:
            if local:
                ray.shutdown()
            raise
        log.info("Ray Serve: %s, replicas %s", address, replicas)
        return cls(address, replicas, handle, local)

    def workers(self, engine: Any, start_timeout: float = 120.0, step_timeout: float = 120.0) -> list[RayWorker]:
        """One front-door slot per replica the deployment may have (its maximum)."""
        return [RayWorker(f"ray{i}", self.handle, engine, start_timeout, step_timeout)
                for i in range(self.replicas[1])]

    def close(self, timeout: float = 15.0) -> None:
        """Remove the deployment (a joined cluster keeps running); stop Ray if it was started here. Waits at
        most ``timeout`` seconds: with the head gone, Ray's own shutdown waits on it much longer."""
        ray, serve = import_ray()

        def shut() -> None:
            try:
                if self.started_here:
                    serve.shutdown()
                else:
                    serve.delete(APP_NAME)
            except Exception:  # noqa: BLE001 - the head may already be gone
                log.warning("could not remove the Ray Serve app cleanly", exc_info=True)
            finally:
                ray.shutdown()

        closer = threading.Thread(target=shut, daemon=True, name="easel-ray-close")
        closer.start()
        closer.join(timeout)
        if closer.is_alive():
            log.warning("Ray did not shut down within %.0f s (is its head gone?); leaving it", timeout)
