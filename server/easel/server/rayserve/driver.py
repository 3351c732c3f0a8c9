"""The Ray driver process (``run_driver``, spawned by ``cluster.RayCluster``): joins Ray or starts it bounded to
this machine, deploys the engine replicas (``Deployment``) and runs the front door's calls on them."""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass
from typing import Any

from . import APP_NAME

log = logging.getLogger(__name__)
#: With ``--ray local``, how long Ray's processes (this driver too) wait for a GCS that stopped answering
#: before they end (Ray's default: 60 s). On one machine it does not come back; the front door then
#: answers new jobs with a clear error instead of sending them to a cluster that is gone.
LOCAL_GCS_TIMEOUT_S = 15


@dataclass
class Deployment:
    """Ray joined or started by this (the driver) process, with the replicas deployed as Serve app ``easel``."""

    address: str
    replicas: tuple[int, int]
    handle: Any
    started_here: bool

    @classmethod
    def start(cls, address: str, replicas: tuple[int, int], engine_kwargs: dict[str, Any],
              threads: int | None = None, cpus: int | None = None) -> Deployment:
        """``address``: ``local`` (a new Ray instance on 127.0.0.1 with ``cpus`` CPUs, default all of this
        machine's) or a cluster address (``ray://…`` or ``HOST:PORT``). One GPU per replica when the
        cluster has GPUs, else one CPU."""
        local = address == "local"
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if local:  # Ray takes the machine's address even for 127.0.0.1, unless it is told this is no cluster
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        import ray  # installed: the front door checked (cluster.import_ray) before it started this process
        from ray import serve

        from .replica import deployment

        if local:
            ray.init(address="local", num_cpus=cpus or os.cpu_count(), include_dashboard=False,
                     _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=False,
                     _system_config={"gcs_rpc_server_reconnect_timeout_s": LOCAL_GCS_TIMEOUT_S})
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

    def kill_replica(self, name: str, namespace: str) -> None:
        """Kill a replica that stopped answering (Ray Serve starts a new one), so that the job's second try
        and later jobs are not routed to it. Best effort: the head may be gone too."""
        import ray

        try:
            ray.kill(ray.get_actor(name, namespace=namespace), no_restart=False)
            log.warning("killed the unresponsive Ray replica %s", name)
        except Exception:
            log.warning("could not kill the unresponsive Ray replica %s", name, exc_info=True)

    def close(self, timeout: float = 15.0) -> None:
        """Remove the deployment (a joined cluster keeps running); stop Ray if it was started here. Waits at
        most ``timeout`` seconds: with the head gone, Ray's own shutdown waits on it much longer."""
        import ray
        from ray import serve

        def shut() -> None:
            try:
                if self.started_here:
                    serve.shutdown()
                else:
                    serve.delete(APP_NAME)
            except Exception:  # the head may already be gone
                log.warning("could not remove the Ray Serve app cleanly", exc_info=True)
            finally:
                ray.shutdown()

        closer = threading.Thread(target=shut, daemon=True, name="easel-ray-close")
        closer.start()
        closer.join(timeout)
        if closer.is_alive():
            log.warning("Ray did not shut down within %.0f s (is its head gone?); leaving it", timeout)


def run_driver(conn: Any, address: str, replicas: tuple[int, int], engine_kwargs: dict[str, Any],
               threads: int | None, cpus: int | None) -> None:
    """The driver process: start the cluster, then run the front door's calls until ``close`` or its end."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C reaches the whole group: the front door decides
    lock = threading.Lock()

    def send(message: tuple) -> None:
        try:
            with lock:
                conn.send(message)
        except (OSError, ValueError):
            pass  # the front door is gone; the main loop ends

    try:
        app = Deployment.start(address, replicas, engine_kwargs, threads, cpus)
    except Exception as exc:  # Ray's errors vary; the front door says which address failed
        send(("failed", None, f"{type(exc).__name__}: {exc}"))
        return
    send(("ready", None, None))
    running: dict[int, Any] = {}
    cancelled: set[int] = set()

    def stream(key: int, request: Any, inputs: Any, model_id: str) -> None:
        try:
            call = app.handle.options(stream=True, multiplexed_model_id=model_id).generate.remote(
                request, inputs, model_id)
            with lock:
                running[key] = call
                if key in cancelled:
                    call.cancel()
            for item in call:
                send(("item", key, item))
            send(("item", key, ("eof",)))
        except Exception as exc:  # a dead replica or cluster, reported to the job
            first = str(exc).splitlines()[0] if str(exc) else ""
            send(("item", key, ("lost", f"{type(exc).__name__}: {first}")))
        finally:
            with lock:
                running.pop(key, None)
                cancelled.discard(key)

    try:
        while True:
            kind, key, payload = conn.recv()
            if kind == "generate":
                threading.Thread(target=stream, args=(key, *payload), daemon=True).start()
            elif kind == "cancel":
                with lock:
                    call = running.get(key)
                    if call is None:
                        cancelled.add(key)  # not sent yet: cancelled once it is
                if call is not None:
                    call.cancel()
            elif kind == "kill":
                threading.Thread(target=app.kill_replica, args=payload, daemon=True).start()
            elif kind == "close":
                break
    except (EOFError, OSError):
        pass  # the front door is gone
    finally:
        app.close()
