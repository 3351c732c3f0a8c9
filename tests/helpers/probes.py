"""Small helpers for tests that run real processes: loopback ports (free, held, listening) and
polling a condition until a deadline."""

from __future__ import annotations

import socket
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def held_port() -> socket.socket:
    """A plain TCP listener that never answers (close it when done): 'something that is not Easel'."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock


def wait_until(cond, timeout: float, step: float = 0.2):
    """``cond()`` every ``step`` s until it is truthy or ``timeout`` s pass; returns its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(step)
    return cond()
