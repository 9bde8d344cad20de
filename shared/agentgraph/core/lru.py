"""A bounded least-recently-used map, for the per-process memories of the engine and the
stores (compiled graphs, run contexts, remembered node states, ended runs).

Bounded by a count and, where values can be large (a run's input is up to 10 MiB), by
their total size as the caller measures it: a long-lived process serving many runs keeps
a bounded amount of memory whatever it is sent. A value larger than the whole budget is
not kept at all. Not thread-safe: each user is one event loop.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Lru(Generic[K, V]):
    """At most `max_items` entries whose `size(value)` adds up to at most `max_bytes`."""

    def __init__(
        self,
        max_items: int,
        max_bytes: int | None = None,
        size: Callable[[V], int] | None = None,
    ) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._size = size or (lambda _value: 0)
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self.bytes = 0

    def get(self, key: K) -> V | None:
        """The value, now the most recently used; None when not kept."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: K, value: V) -> None:
        self.pop(key)
        weight = self._size(value) if self.max_bytes is not None else 0
        if self.max_bytes is not None and weight > self.max_bytes:
            return
        self._entries[key] = (value, weight)
        self.bytes += weight
        while len(self._entries) > self.max_items or (
            self.max_bytes is not None and self.bytes > self.max_bytes
        ):
            _, (_, dropped) = self._entries.popitem(last=False)
            self.bytes -= dropped

    def pop(self, key: K) -> V | None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        self.bytes -= entry[1]
        return entry[0]

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)
