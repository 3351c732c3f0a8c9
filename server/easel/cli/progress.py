"""A one-line progress bar for the client and server commands."""

from __future__ import annotations

import sys
from typing import TextIO


class ProgressBar:
    """A one-line progress bar on stderr (only when it is a terminal, else one line per stage).

    ``quiet`` shows nothing (and opens nothing: no stream to close).
    """

    def __init__(self, label: str, width: int = 30, stream: TextIO | None = None, quiet: bool = False):
        self.label, self.width, self.quiet = label, width, quiet
        self.stream = stream or sys.stderr
        self.tty = not quiet and self.stream.isatty()
        self._last = ""

    def update(self, step: int, total: int, stage: str) -> None:
        if self.quiet:
            return
        if self.tty:
            filled = int(self.width * step / total) if total else 0
            bar = "#" * filled + "." * (self.width - filled)
            count = f"{step}/{total}" if total else ""
            self.stream.write(f"\r{self.label}: [{bar}] {count} {stage[:40]:<40}")
            self.stream.flush()
        elif stage != self._last or (total and step == total):
            self.stream.write(f"{self.label}: {stage} {step}/{total}\n")
            self.stream.flush()
        self._last = stage

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")
