"""A small LRU of loaded models: at most ``max_loaded`` sets of weights in memory at once.

Thread-safe on its own (a short lock per call), so readers such as the app's worker choice never wait for
the engine's lock, which a model load holds for seconds.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

T = TypeVar("T")


class LRUCache(Generic[T]):
    """Least-recently-used map; ``make_room`` pops the entries that must go before one more is added."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._items: OrderedDict[str, T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> T | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def peek(self, key: str) -> T | None:
        """The entry without making it the most recently used."""
        with self._lock:
            return self._items.get(key)

    def put(self, key: str, item: T) -> None:
        with self._lock:
            self._items[key] = item
            self._items.move_to_end(key)

    def make_room(self) -> list[tuple[str, T]]:
        """Remove (and return) least-recently-used entries so that one more fits."""
        out = []
        with self._lock:
            while len(self._items) >= self.capacity:
                out.append(self._items.popitem(last=False))
        return out

    def pop_all(self) -> list[tuple[str, T]]:
        with self._lock:
            out = list(self._items.items())
            self._items.clear()
        return out

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._items)
