"""Job-time injection for server tests: a real engine whose every job takes ``delay`` seconds longer.

The delay is spent before the real run, in 10 ms slices that honour ``cancelled()`` as a step
loop does, so cancellation stays within a slice. With the delay far above the model's own time,
tests can reason in frame times without depending on how fast this machine is.
"""

from __future__ import annotations

import time
from typing import Any

from easel.server.engine.types import JobCancelled


class SlowEngine:
    """Wraps an ``Engine``: same models and answers, ``run`` slowed by ``delay`` seconds."""

    def __init__(self, engine: Any, delay: float):
        self._engine, self.delay = engine, delay

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def run(self, job: Any, progress: Any, cancelled: Any) -> Any:
        end = time.monotonic() + self.delay
        while (left := end - time.monotonic()) > 0:
            if cancelled():
                raise JobCancelled()
            time.sleep(min(left, 0.01))
        return self._engine.run(job, progress, cancelled)
