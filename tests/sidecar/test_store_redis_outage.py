"""Redis killed mid-run: failOpen keeps admitting on per-pod limits and says so, failClosed
refuses with Unavailable (503), and a new Redis on the same port brings shared limits and
the spend made meanwhile back."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from llmgate_sidecar.errors import Unavailable
from llmgate_sidecar.policy.redis_store import RedisStore, keys_for
from llmgate_sidecar.policy.store import Demand, Refusal, Ticket

from tests.sidecar.redis_server import RedisServer

DEMAND = Demand("ns/outage", requests_per_minute=3, budget_micros=10_000_000, period="1d",
                reserve_micros=1_000_000)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, which it may kill and restart on the same port."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def open_store(server: RedisServer) -> AsyncIterator[RedisStore]:
    store = RedisStore.from_url(server.url, timeout=2.0, retry_interval=0.0)
    yield store
    await store.aclose()


async def test_fail_open_degrades_to_local_limits_and_recovers(
        server: RedisServer, open_store: RedisStore, caplog: pytest.LogCaptureFixture) -> None:
    store = open_store
    before = await store.admit(DEMAND)
    assert isinstance(before, Ticket) and before.origin == "redis"

    server.stop()
    caplog.set_level(logging.WARNING, logger="llmgate.store")
    local = [await store.admit(DEMAND) for _ in range(4)]
    # Per-pod limits still hold: 3 requests/min locally, the 4th is refused.
    assert [t.origin for t in local[:3] if isinstance(t, Ticket)] == ["memory"] * 3
    assert isinstance(local[3], Refusal) and local[3].kind == "requests"
    health = store.health
    assert health.degraded and health.fallbacks == 4 and health.errors == 4
    unavailable = [r for r in caplog.records if "Redis unavailable" in r.getMessage()]
    assert len(unavailable) == 1                       # logged once, not once per request
    # Settling while Redis is down loses nothing: queued for when it returns.
    assert isinstance(local[0], Ticket)
    assert await store.settle(local[0], tokens=10, cost_micros=250_000)
    assert await store.settle(before, tokens=10, cost_micros=400_000)
    assert store.health.pending == 2
    with pytest.raises(Unavailable):
        await store.spend("ns/outage", "1d")

    server.start()                                     # a new, empty Redis on the same port
    after = await store.admit(DEMAND)
    assert isinstance(after, Ticket) and after.origin == "redis"
    health = store.health
    assert not health.degraded and health.pending == 0
    # The cost of the locally admitted request reached the shared budget, and so did the
    # Redis ticket's: the new server had lost its reservation, not the money it cost.
    spend = await store.spend("ns/outage", "1d")
    assert (spend.spent_micros, spend.reserved_micros) == (650_000, 1_000_000)
    assert health.orphaned == 1
    assert await store.client.exists(*keys_for("ns/outage")) >= 2
    assert any("answered again" in r.getMessage() for r in caplog.records)


async def test_shared_limits_resume_after_the_outage(server: RedisServer,
                                                     open_store: RedisStore) -> None:
    other_replica = RedisStore.from_url(server.url, timeout=2.0, retry_interval=0.0)
    try:
        server.stop()
        assert isinstance(await open_store.admit(DEMAND), Ticket)   # local
        server.start()
        outcomes = [await s.admit(DEMAND) for s in (open_store, other_replica) * 2]
    finally:
        await other_replica.aclose()
    # Back on Redis, the two replicas share one window of 3 requests again.
    assert [isinstance(o, Ticket) for o in outcomes] == [True, True, True, False]
    assert all(o.origin == "redis" for o in outcomes if isinstance(o, Ticket))


async def test_fail_closed_refuses_with_unavailable(server: RedisServer) -> None:
    store = RedisStore.from_url(server.url, timeout=2.0, fail_mode="failClosed",
                                retry_interval=0.0)
    try:
        ticket = await store.admit(DEMAND)
        assert isinstance(ticket, Ticket)
        server.stop()
        with pytest.raises(Unavailable) as caught:
            await store.admit(DEMAND)
        assert caught.value.status == 503 and "Retry-After" in caught.value.headers
        assert await store.settle(ticket, tokens=1, cost_micros=1)   # queued, not raised
        server.start()
        assert isinstance(await store.admit(DEMAND), Ticket)
    finally:
        await store.aclose()


async def test_after_a_failure_redis_is_not_retried_until_the_interval_passes(
        server: RedisServer) -> None:
    ticks = [100.0]
    store = RedisStore.from_url(server.url, timeout=2.0, retry_interval=5.0,
                                monotonic=lambda: ticks[0])
    try:
        server.stop()
        await store.admit(DEMAND)
        server.start()
        ticks[0] += 4.9
        assert (await store.admit(DEMAND)).origin == "memory"   # type: ignore[union-attr]
        assert store.health.errors == 1                # Redis was not even tried
        ticks[0] += 0.1
        assert (await store.admit(DEMAND)).origin == "redis"    # type: ignore[union-attr]
    finally:
        await store.aclose()
