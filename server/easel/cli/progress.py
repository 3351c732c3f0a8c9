"""A one-line progress bar for the client and server commands."""

from __future__ import annotations

import sys
from typing import TextIO


class ProgressBar:
    """A one-line progress bar on stderr when it is a terminal; else (a log, a pipe) one line when
    ``stage`` changes and one per quarter of ``total`` within it, e.g. ``generating: denoising 10/20``.

    ``total`` 0 means no count to show. ``quiet`` shows nothing (and opens nothing: no stream to close).
    """

    def __init__(self, label: str, width: int = 30, stream: TextIO | None = None, quiet: bool = False):
        self.label, self.width, self.quiet = label, width, quiet
        self.stream = stream or sys.stderr
        self.tty = not quiet and self.stream.isatty()
        self._last: tuple[str, int] | None = None  # the stage and quarter last written (not a terminal)

    def update(self, step: int, total: int, stage: str) -> None:
        if self.quiet:
            return
        count = f"{step}/{total}" if total > 0 else ""
        if self.tty:
            filled = int(self.width * min(step, total) / total) if total > 0 else 0
            bar = "#" * filled + "." * (self.width - filled)
            self.stream.write(f"\r{self.label}: [{bar}] {count} {stage[:40]:<40}")
            self.stream.flush()
            return
        mark = (stage, 4 * step // total if total > 0 else 0)
        if mark != self._last:
            self.stream.write(f"{self.label}: {stage}{' ' + count if count else ''}\n")
            self.stream.flush()
            self._last = mark

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")
