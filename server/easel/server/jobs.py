"""The job queue: fair across clients, cancellable, pure data (no I/O, no threads).

Jobs wait in one queue per client; ``pop_next`` serves clients round-robin, so a client
that submits a batch of jobs cannot starve another. With one job per client this is plain
arrival order. ``LivePacing`` decides when a newer live (``replace``) state may stop a
client's running live frame, so that live painting always makes progress.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from ..client.protocol import GenerateRequest, Image


class QueueFull(Exception):
    """A client has too many jobs waiting."""


@dataclass
class Job:
    id: str
    client: str
    request: GenerateRequest
    images: dict[str, Image] = field(default_factory=dict)
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event)
    replaced: bool = False  # cancelled because a newer live request from the same client came in
    from_idle: bool = False  # a live job submitted while the client had no other live job queued or running

    def cancelled(self) -> bool:
        return self.cancel_event.is_set()


class JobQueue:
    """Round-robin queue of jobs per client, bounded per client."""

    def __init__(self, max_per_client: int = 32):
        self.max_per_client = max_per_client
        self._queues: OrderedDict[str, deque[Job]] = OrderedDict()  # client -> jobs, in turn order
        self._by_id: dict[str, Job] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._by_id

    def add(self, job: Job) -> int:
        """Queue a job; returns its 1-based position in serving order."""
        if job.id in self._by_id:
            raise ValueError(f"job id {job.id!r} is already queued")
        queue = self._queues.setdefault(job.client, deque())
        if len(queue) >= self.max_per_client:
            raise QueueFull(f"you already have {len(queue)} jobs waiting (limit {self.max_per_client}); "
                            "wait for some to finish or cancel them")
        queue.append(job)
        self._by_id[job.id] = job
        return self.position(job.id)

    def pop_next(self) -> Job | None:
        """The next job to run: the head of the client whose turn it is."""
        while self._queues:
            client, queue = next(iter(self._queues.items()))
            self._queues.move_to_end(client)  # this client goes to the back of the turn order
            if queue:
                job = queue.popleft()
                if not queue:
                    del self._queues[client]
                del self._by_id[job.id]
                return job
            del self._queues[client]
        return None

    def remove(self, job_id: str) -> Job | None:
        job = self._by_id.pop(job_id, None)
        if job is not None:
            queue = self._queues[job.client]
            queue.remove(job)
            if not queue:
                del self._queues[job.client]
        return job

    def remove_where(self, client: str, predicate) -> list[Job]:
        """Remove a client's queued jobs that match ``predicate`` (live painting's replace)."""
        doomed = [job for job in self._queues.get(client, ()) if predicate(job)]
        for job in doomed:
            self.remove(job.id)
        return doomed

    def drop_client(self, client: str) -> list[Job]:
        """Remove every queued job of a client (it disconnected)."""
        jobs = list(self._queues.pop(client, ()))
        for job in jobs:
            del self._by_id[job.id]
        return jobs

    def order(self) -> list[Job]:
        """All queued jobs in the order they would be served."""
        queues = [list(q) for q in self._queues.values()]
        out: list[Job] = []
        depth = 0
        while any(depth < len(q) for q in queues):
            out.extend(q[depth] for q in queues if depth < len(q))
            depth += 1
        return out

    def position(self, job_id: str) -> int:
        for i, job in enumerate(self.order(), 1):
            if job.id == job_id:
                return i
        raise KeyError(job_id)


LIVE_RESTART = 0.25  #: share of a frame time during which a newer live state may stop a frame started from idle


class LivePacing:
    """When a newer ``replace`` state may stop a client's running live frame.

    Stopping every running frame for a newer state delivers nothing while states come faster
    than frames are made (a livelock). So only a frame that started *from idle* (no other live
    job of the client was queued or running when it was submitted) may be stopped, and only
    while it is young (in its first ``restart`` share of a frame time; any time before a
    delivered frame gives an estimate). A continuous stroke thus gets frames at the server's
    capacity, each for the newest state queued when the previous frame ended; an isolated edit
    during a young frame still restarts it at once. ``restart=math.inf`` is the old behaviour
    (every newer state stops the running frame), 0 never stops it. Pure logic, no I/O.
    """

    def __init__(self, restart: float = LIVE_RESTART):
        self.restart = restart
        self._frame_s: dict[str, float] = {}  # client -> running estimate of one live frame's time

    def frame_s(self, client: str) -> float | None:
        return self._frame_s.get(client)

    def may_stop(self, job: Job, now: float) -> bool:
        """Whether a newer state of its client may stop ``job``, a running live frame, now."""
        if math.isinf(self.restart):
            return True
        if not job.from_idle or self.restart <= 0:
            return False
        estimate = self._frame_s.get(job.client)
        return estimate is None or now - (job.started or now) < self.restart * estimate

    def delivered(self, client: str, seconds: float) -> None:
        """A live frame of ``client`` took ``seconds`` from start to result."""
        old = self._frame_s.get(client)
        self._frame_s[client] = seconds if old is None else 0.7 * old + 0.3 * seconds

    def forget(self, client: str) -> None:
        self._frame_s.pop(client, None)
