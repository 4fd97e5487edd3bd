"""Fixtures of the sidecar tests: a flushed client on the session's real redis-server
(`redis_server`, in tests/conftest.py), a fake clock, and the store under test
parametrized over MemoryStore, RedisStore on one server and RedisStore on a real 3-master
Redis Cluster (one behavioural suite: the scripts must keep every key in one slot)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from llmgate_sidecar.policy.redis_store import RedisStore
from llmgate_sidecar.policy.store import MemoryStore, Store

from tests.sidecar.redis_server import RedisServer

# 2023-11-14T22:13:20.250Z: not on any period boundary.
T0 = 1_700_000_000.25


class FakeClock:
    """Wall clock that moves only when told to (seconds since the epoch)."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A client on a flushed database (each test starts from nothing)."""
    client = aioredis.from_url(redis_server.url, decode_responses=True)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
async def store(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[Store]:
    """The same suite runs against every store and topology, all on the injected clock."""
    if request.param == "memory":
        yield MemoryStore(clock=clock)
        return
    if request.param == "redis":
        url = request.getfixturevalue("redis_server").url
    else:
        url = request.getfixturevalue("redis_cluster").url
    redis_store = RedisStore.from_url(url, clock=clock)
    await redis_store.client.flushdb()
    try:
        yield redis_store
    finally:
        await redis_store.aclose()
