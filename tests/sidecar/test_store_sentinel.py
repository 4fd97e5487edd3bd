"""The limit store, the response cache and the operator's spend reader behind a real Sentinel
set on loopback (master, replica, three Sentinels), and a master crash during traffic.

The documented outcome of a failover (docs/limits.md, "Redis topologies"): under failOpen no
request fails, the pod admits on its own limits while no master answers, settlements queue
and are replayed on the promoted replica, so every cost is booked exactly once and no
reservation is left behind; under failClosed admits get Unavailable (503 + Retry-After) for
that window and succeed again afterwards without a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from llmgate_operator.spend import BudgetRef, SpendReader
from llmgate_sidecar.cache.redis_backend import RedisBackend
from llmgate_sidecar.errors import Unavailable
from llmgate_sidecar.policy.redis_store import RedisStore
from llmgate_sidecar.policy.store import Demand, Ticket

from tests.sidecar.redis_server import SentinelSet

COST = 1_000  # micro-dollars per request
SCOPE = "team-a/sentinel"


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[SentinelSet]:
    sentinels = SentinelSet(tmp_path)
    try:
        sentinels.start()
        yield sentinels
    finally:
        sentinels.stop()


def demand() -> Demand:
    return Demand(scope=SCOPE, budget_micros=10**12, period="30d", reserve_micros=COST,
                  requests_per_minute=10**6)


async def test_store_cache_and_spend_reader_work_through_sentinel(
        sentinel_set: SentinelSet) -> None:
    store = RedisStore.from_url(sentinel_set.url)
    cache = RedisBackend.from_url(sentinel_set.url)
    reader = SpendReader.from_url(sentinel_set.url)
    try:
        ticket = await store.admit(demand())
        assert isinstance(ticket, Ticket) and ticket.origin == "redis"
        assert await store.settle(ticket, tokens=3, cost_micros=COST)
        await cache.set("digest", b"answer", ttl=5)
        assert await cache.get("digest") == b"answer"
        _, spent = await reader.read([BudgetRef("team-a", "sentinel", "30d")])
        assert spent == [COST]
        # It really is the master the Sentinels name that holds the key.
        with redis.Redis(port=sentinel_set.master_port()) as master:
            assert master.exists("llmgate:cache:{digest}") == 1
    finally:
        await reader.aclose()
        await cache.aclose()
        await store.aclose()


async def test_a_master_crash_during_traffic_keeps_the_documented_guarantees(
        sentinel_set: SentinelSet) -> None:
    open_store = RedisStore.from_url(sentinel_set.url, fail_mode="failOpen",
                                     retry_interval=0.2)
    closed_store = RedisStore.from_url(sentinel_set.url, fail_mode="failClosed",
                                       retry_interval=0.2)
    origins: list[str] = []
    refused_closed = served_closed_after = 0
    failed_over_at: float | None = None
    try:
        for _ in range(10):  # steady traffic before the crash
            ticket = await open_store.admit(demand())
            assert isinstance(ticket, Ticket)
            origins.append(ticket.origin)
            assert await open_store.settle(ticket, tokens=1, cost_micros=COST)
        # A request in flight when the master dies: admitted there (and replicated), settled
        # after the crash, so its settlement must wait for the new master.
        in_flight = await open_store.admit(demand())
        assert isinstance(in_flight, Ticket) and in_flight.origin == "redis"
        with redis.Redis(port=sentinel_set.master.port) as master:
            assert master.wait(1, 2000) == 1  # the replica has every write so far
        sentinel_set.kill_master()
        assert await open_store.settle(in_flight, tokens=1, cost_micros=COST)
        settled = 11
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ticket = await open_store.admit(demand())  # failOpen: never raises
            assert isinstance(ticket, Ticket)
            origins.append(ticket.origin)
            assert await open_store.settle(ticket, tokens=1, cost_micros=COST)
            settled += 1
            try:
                closed = await closed_store.admit(demand())
                assert isinstance(closed, Ticket)
                await closed_store.settle(closed, tokens=1, cost_micros=0)
                if failed_over_at is not None:
                    served_closed_after += 1
            except Unavailable as exc:
                assert int(exc.headers["Retry-After"]) >= 1
                refused_closed += 1
            if failed_over_at is None and sentinel_set.master_port() == \
                    sentinel_set.replica.port:
                failed_over_at = time.monotonic()
            if failed_over_at is not None and origins[-5:] == ["redis"] * 5 \
                    and served_closed_after >= 5:
                break
            await asyncio.sleep(0.02)
        assert failed_over_at is not None, "no failover within 30 s"
        assert origins[:10] == ["redis"] * 10
        assert "memory" in origins, "no request was admitted while no master answered"
        assert origins[-5:] == ["redis"] * 5, "limits were not shared again after failover"
        assert refused_closed >= 1 and served_closed_after >= 5
        health = open_store.health
        assert not health.degraded and health.pending == 0 and health.fallbacks >= 1
        # Every request's cost is booked once on the promoted master, and the in-flight
        # request's reservation was released by its replayed settlement.
        spend = await open_store.spend(SCOPE, "30d")
        assert spend.spent_micros == settled * COST
        assert spend.reserved_micros == 0
    finally:
        await closed_store.aclose()
        await open_store.aclose()
