"""A small LRU of loaded models: at most ``max_loaded`` sets of weights in memory at once."""

from __future__ import annotations

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

    def get(self, key: str) -> T | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def peek(self, key: str) -> T | None:
        """The entry without making it the most recently used."""
        return self._items.get(key)

    def put(self, key: str, item: T) -> None:
        self._items[key] = item
        self._items.move_to_end(key)

    def make_room(self) -> list[tuple[str, T]]:
        """Remove (and return) least-recently-used entries so that one more fits."""
        out = []
        while len(self._items) >= self.capacity:
            out.append(self._items.popitem(last=False))
        return out

    def pop_all(self) -> list[tuple[str, T]]:
        out = list(self._items.items())
        self._items.clear()
        return out

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def keys(self) -> list[str]:
        return list(self._items)
