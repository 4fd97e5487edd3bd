"""Where cached responses live: a bounded in-memory LRU here, or Redis shared by every replica
(`cache.redis_backend`, imported only when a Redis URL is set).

Bytes by key with a TTL behind the `CacheBackend` Protocol; `cache.ResponseCache` is the only
user. A backend never raises on failure.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol


class CacheBackend(Protocol):
    """Bytes by key with a TTL. Must not raise on backend failure: return None / do nothing."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float) -> None: ...

    async def aclose(self) -> None: ...


class MemoryBackend:
    """An LRU bounded by entry count and total bytes; expiry on read, by the injected clock."""

    def __init__(self, *, max_entries: int = 10_000, max_bytes: int = 64 * 1024 * 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    async def get(self, key: str) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] <= self._clock():
            self._drop(key)
            return None
        self._items.move_to_end(key)
        return item[1]

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if ttl <= 0 or len(value) > self.max_bytes:
            return
        if key in self._items:
            self._drop(key)
        self._items[key] = (self._clock() + ttl, value)
        self.bytes += len(value)
        while len(self._items) > self.max_entries or self.bytes > self.max_bytes:
            self._drop(next(iter(self._items)))

    def _drop(self, key: str) -> None:
        _, value = self._items.pop(key)
        self.bytes -= len(value)

    async def aclose(self) -> None:
        self._items.clear()
        self.bytes = 0
