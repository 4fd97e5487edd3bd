"""Where cached responses live: a bounded in-memory LRU, or Redis shared by every replica.

Bytes by key with a TTL behind the `CacheBackend` Protocol; `cache.ResponseCache` is the only
user. A backend never raises on failure: a Redis error is a miss (counted in `errors`) and
Redis is skipped for a short interval so an outage adds no timeout to every request.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from llmgate_contract.redis_client import RedisClient, connect
from redis.exceptions import RedisError

log = logging.getLogger("llmgate.cache")


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


class RedisBackend:
    """Entries in Redis under `llmgate:cache:{<digest>}` (the digest is the cluster hash tag,
    so entries spread over slots), expiring by SET PX. After an error, Redis is skipped for
    `retry_interval` seconds so an outage does not add a timeout to every request."""

    def __init__(self, client: RedisClient, *, retry_interval: float = 1.0,
                 owns_client: bool = False,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.retry_interval = retry_interval
        self.errors = 0
        self._owns = owns_client
        self._monotonic = monotonic
        self._down_until = 0.0

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 0.25, **kwargs: Any) -> RedisBackend:
        # Bytes, not str: entries may be compressed. Short timeouts: a cache must be cheap.
        client = connect(url, decode_responses=False, timeout=timeout)
        return cls(client, owns_client=True, **kwargs)

    @staticmethod
    def redis_key(key: str) -> str:
        return f"llmgate:cache:{{{key}}}"

    def _available(self) -> bool:
        return self._monotonic() >= self._down_until

    def _failed(self, op: str, exc: BaseException) -> None:
        if self._available():
            log.warning("cache %s failed, treating as a miss for %.1fs: %s", op,
                        self.retry_interval, exc)
        self.errors += 1
        self._down_until = self._monotonic() + self.retry_interval

    async def get(self, key: str) -> bytes | None:
        if not self._available():
            self.errors += 1
            return None
        try:
            value = await self.client.get(self.redis_key(key))
        except (TimeoutError, RedisError, OSError) as exc:
            self._failed("read", exc)
            return None
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        millis = int(ttl * 1000)
        if millis <= 0 or not self._available():
            return
        try:
            await self.client.set(self.redis_key(key), value, px=millis)
        except (TimeoutError, RedisError, OSError) as exc:
            self._failed("write", exc)

    async def aclose(self) -> None:
        if self._owns:
            await self.client.aclose()
