"""The response cache in Redis, shared by every replica (the `CacheBackend` of backends.py).

Its own module so that redis-py is imported only by a sidecar with a Redis URL (app.py
imports it then). A Redis error is a miss (counted in `errors`) and Redis is skipped for a
short interval so an outage adds no timeout to every request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from llmgate_contract.redis_client import RedisClient, connect
from redis.exceptions import RedisError

log = logging.getLogger("llmgate.cache")


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
    def from_url(cls, url: str, *, timeout: float = 0.25, password: str | None = None,
                 **kwargs: Any) -> RedisBackend:
        # Bytes, not str: entries may be compressed. Short timeouts: a cache must be cheap.
        client = connect(url, decode_responses=False, timeout=timeout, password=password)
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
