"""The front door's handle on Ray: the Ray driver runs in a child process, so the front door outlives the
cluster's head (docs/scaling.md).

    cluster = RayCluster.start("local", replicas=(2, 2), engine_kwargs={...})
    workers = cluster.workers(catalog_engine)   # RayWorker slots for the App
    ...
    cluster.close()

Ray ends a driver process whose raylet dies: with ``--ray local``, when this machine's Ray head goes away.
The front door is therefore no Ray driver. ``RayCluster.start`` spawns one (``driver.run_driver``): it joins or
starts Ray, deploys the replicas and makes each job's streaming call for the front door, over a pipe
(``(kind, key, payload)`` tuples; numpy arrays travel pickled raw, no PNG round trip). When the child ends,
``RayCluster.down`` says why and what to do; the jobs it was running end with ``("lost", …)``, and
``RayWorker`` fails them and every new job with that message (``worker_failed``).
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import queue
import threading
import time
from typing import Any

from ...client.codes import ErrorCode
from ..engine.types import EngineAPI, EngineError
from . import INSTALL_HINT
from .worker import RayWorker

log = logging.getLogger(__name__)
RETRY_S = 30.0  # while the driver is down: at most one new start per this many seconds (when a job asks)


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
        raise EngineError(INSTALL_HINT, field="ray", code=ErrorCode.UNAVAILABLE) from None
    return ray, serve


class Call:
    """One job's streaming call through the driver: ``items`` as the replica yields them, then
    ``("eof",)``, or ``("lost", why)`` when the call or the driver broke."""

    def __init__(self, driver: RayCluster, key: int):
        self.driver, self.key = driver, key
        self.items: queue.Queue[tuple] = queue.Queue()

    def cancel(self) -> None:
        """Cancel the call: the replica stops at its next step."""
        self.driver.send(("cancel", self.key, None))

    def close(self) -> None:
        self.driver.calls.pop(self.key, None)


class RayCluster:
    """The front door's end of the Ray driver process; ``down`` is None while it runs, else why not (the
    message jobs get). While down, a job that asks makes it start a new driver (``revive``)."""

    def __init__(self, address: str, replicas: tuple[int, int], launch: tuple):
        self.address, self.replicas, self.launch = address, replicas, launch
        self.process: Any = None
        self.conn: Any = None
        self.calls: dict[int, Call] = {}
        self.down: str | None = "the Ray driver has not started"
        self.lock = threading.Lock()  # guards the driver, ``down`` and ``calls`` together, and sending
        self.keys = itertools.count()
        self.closing = self.reviving = False
        self.tried = 0.0  # when the last revive ended

    @classmethod
    def start(cls, address: str, replicas: tuple[int, int], engine_kwargs: dict[str, Any],
              threads: int | None = None, cpus: int | None = None, timeout: float = 600.0) -> RayCluster:
        """Spawn the driver and wait until the replicas are deployed; EngineError (code ``unavailable``)
        naming the cause when it cannot, or not within ``timeout`` seconds."""
        cluster = cls(address, replicas, (engine_kwargs, threads, cpus, timeout))
        cluster._attach(*_spawn(address, replicas, *cluster.launch))
        return cluster

    def _attach(self, process: Any, conn: Any) -> None:
        with self.lock:
            self.process, self.conn, self.down = process, conn, None
        threading.Thread(target=self._read, args=(process, conn), daemon=True, name="easel-ray-driver").start()

    def revive(self) -> None:
        """While down: start a new driver on its own thread (a new local Ray, or the cluster joined again),
        at most once per ``RETRY_S``; jobs keep getting ``down`` until it is up."""
        with self.lock:
            if not self.down or self.closing or self.reviving or time.monotonic() - self.tried < RETRY_S:
                return
            self.reviving = True

        def run() -> None:
            try:
                process, conn = _spawn(self.address, self.replicas, *self.launch)
                if self.closing:
                    conn.send(("close", None, None))
                    _end(process, 20.0)
                    return
                self._attach(process, conn)
                log.warning("Ray: the engine is back (%s)", self.address)
            except Exception as exc:  # still down; the next job that asks tries again
                log.warning("Ray: could not start again: %s", exc)
            finally:
                self.tried, self.reviving = time.monotonic(), False

        threading.Thread(target=run, daemon=True, name="easel-ray-revive").start()

    def workers(self, engine: EngineAPI, start_timeout: float = 120.0, step_timeout: float = 120.0) -> list[RayWorker]:
        """One front-door slot per replica the deployment may have (its maximum)."""
        return [RayWorker(f"ray{i}", self, engine, start_timeout, step_timeout) for i in range(self.replicas[1])]

    def stream(self, request: Any, inputs: Any, model_id: str) -> Call:
        """Send a job to the replicas; its items arrive in the returned call (``lost`` at once when down)."""
        with self.lock:
            call = Call(self, next(self.keys))
            if self.down:
                call.items.put(("lost", self.down))
                return call
            self.calls[call.key] = call
        self.send(("generate", call.key, (request, inputs, model_id)))
        return call

    def kill_replica(self, name: str, namespace: str) -> None:
        """Kill a replica that stopped answering (Ray Serve starts a new one)."""
        self.send(("kill", None, (name, namespace)))

    def send(self, message: tuple) -> None:
        try:
            with self.lock:
                if not self.down:
                    self.conn.send(message)
        except (OSError, ValueError):
            pass  # the child is gone; the reader says so

    def _read(self, process: Any, conn: Any) -> None:
        try:
            while True:
                _, key, item = conn.recv()
                call = self.calls.get(key)
                if call is not None:
                    call.items.put(item)
        except (EOFError, OSError):
            pass
        except Exception:  # a message that cannot be read: this driver is given up on
            log.exception("Ray: a message from the driver process could not be read; stopping it")
            process.kill()
        process.join(10)
        ended = f"its Ray driver process ended, exit code {process.exitcode}"
        if self.closing:
            why = "the server is shutting down"
        elif self.address == "local":
            why = (f"the local Ray instance this server started is gone ({ended}); jobs running on it were not "
                   "finished. The server starts a new one when a job asks: try again in a minute (or restart "
                   "easel serve). Finished results are kept: fetch them")
        else:
            why = (f"the Ray cluster at {self.address} is unreachable ({ended}); jobs running on it were not "
                   "finished. Restart the cluster (ray start --head on its head, ray start --address on the "
                   "others); the server joins it again when a job asks. Finished results are kept: fetch them")
        with self.lock:
            self.down = why
            calls, self.calls = list(self.calls.values()), {}
        if not self.closing:
            log.error("Ray: %s", why)
        for call in calls:
            call.items.put(("lost", why))

    def close(self, timeout: float = 20.0) -> None:
        """Stop the driver: it removes the deployment (a joined cluster keeps running) and stops a Ray it
        started; killed after ``timeout`` seconds (with the head gone, Ray's shutdown can wait long)."""
        self.closing = True
        self.send(("close", None, None))
        if self.process is not None:
            _end(self.process, timeout)


def _spawn(address: str, replicas: tuple[int, int], engine_kwargs: dict[str, Any], threads: int | None,
           cpus: int | None, timeout: float) -> tuple[Any, Any]:
    """Start a driver process; (process, its pipe) once its replicas are deployed, else EngineError."""
    from .driver import run_driver

    context = multiprocessing.get_context("spawn")
    mine, theirs = context.Pipe()
    process = context.Process(target=run_driver, args=(theirs, address, replicas, engine_kwargs, threads, cpus),
                              name="easel-ray-driver")
    process.start()
    theirs.close()  # so that the child's end is seen (EOF) when it exits
    deadline = time.monotonic() + timeout
    try:
        while not mine.poll(0.2):
            if not process.is_alive() or time.monotonic() > deadline:
                raise EngineError(f"the Ray driver process did not start (exit code {process.exitcode})",
                                  code=ErrorCode.UNAVAILABLE)
        kind, _, payload = mine.recv()
    except EOFError:
        kind, payload = "failed", f"the Ray driver process ended (exit code {process.exitcode})"
    except BaseException:
        _end(process)
        raise
    if kind != "ready":
        _end(process)
        raise EngineError(payload, code=ErrorCode.UNAVAILABLE)
    return process, mine


def _end(process: Any, timeout: float = 5.0) -> None:
    process.join(timeout)
    if process.is_alive():
        log.warning("the Ray driver process did not end within %.0f s; killing it", timeout)
        process.kill()
        process.join(5)
