"""RedisStore specifics that the shared suite cannot see: key layout for Redis Cluster, TTLs
on every key, integer money, one round trip per admit/settle, and script reloading."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from llmgate_sidecar.policy.redis_store import RedisStore, keys_for
from llmgate_sidecar.policy.store import Demand, Ticket

from tests.sidecar.redis_server import RedisServer

FULL = Demand("team-a/chatbot", requests_per_minute=10, tokens_per_minute=5000, tokens=300,
              max_parallel=4, budget_micros=25_000_000, period="calendar-month",
              reserve_micros=12_345, lease_ms=60_000)


@pytest.fixture
async def store(redis_client: aioredis.Redis) -> AsyncIterator[RedisStore]:
    store = RedisStore(redis_client)
    yield store
    await store.aclose()


async def admit(store: RedisStore, demand: Demand = FULL) -> Ticket:
    ticket = await store.admit(demand)
    assert isinstance(ticket, Ticket)
    return ticket


async def test_every_key_shares_the_hash_tag_and_expires(store: RedisStore,
                                                         redis_client: aioredis.Redis) -> None:
    leaked = await admit(store)
    await store.settle(await admit(store), tokens=250, cost_micros=9_999)
    keys = [str(key) for key in await redis_client.keys("*")]
    assert set(keys) == set(keys_for("team-a/chatbot"))  # tombs: the settled ticket's mark
    assert all(key.startswith("llmgate:{team-a/chatbot}:") for key in keys)
    for key in keys:
        assert await redis_client.pttl(key) > 0, key          # nothing lives forever
    budget = await redis_client.hgetall("llmgate:{team-a/chatbot}:budget")
    assert budget["spent"] == "9999" and budget["reserved"] == str(leaked.reserve_micros)
    assert budget["period"] == "calendar-month"


class CountingRedis(aioredis.Redis):
    """A real client that records every command it sends (one command = one round trip)."""

    sent: list[str] = []

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent.append(str(args[0]).upper())
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]


async def test_admit_and_settle_are_one_round_trip_each(redis_server: RedisServer) -> None:
    client = CountingRedis(host="127.0.0.1", port=redis_server.port, decode_responses=True)
    client.sent = []
    store = RedisStore(client, owns_client=True)
    try:
        await store.settle(await admit(store), tokens=1, cost_micros=1)
        assert client.sent[-1] == "EVALSHA"      # the first call may load the script
        client.sent.clear()
        ticket = await admit(store)
        assert client.sent == ["EVALSHA"]
        await store.settle(ticket, tokens=1, cost_micros=1)
        assert client.sent == ["EVALSHA", "EVALSHA"]
    finally:
        await store.aclose()


async def test_scripts_are_reloaded_after_a_script_flush(store: RedisStore,
                                                         redis_client: aioredis.Redis) -> None:
    await admit(store)
    await redis_client.script_flush()
    await admit(store)
    assert store.health.errors == 0


async def test_server_time_drives_windows_without_an_injected_clock(
        store: RedisStore) -> None:
    demand = Demand("ns/server-time", requests_per_minute=1)
    first = await admit(store, demand)
    refusal = await store.admit(demand)
    assert not isinstance(refusal, Ticket)
    # The first request's one-second bucket leaves the window 59-60 s after it was taken.
    assert 0 < refusal.retry_after_ms <= 60_000
    assert first.admitted_ms > 1_700_000_000_000               # Redis TIME, in ms
