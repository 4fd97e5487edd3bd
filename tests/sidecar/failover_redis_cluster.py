"""Redis Cluster: the master holding a key's slot is killed while requests of that key and
of a key on another master are admitted and settled, under failOpen. What happens,
measured on real redis-servers (3 masters, 1 replica each, cluster-node-timeout 2 s), and
what must hold (run by `make failover`, not by `make test`: on a loaded machine the
failover itself can outlast any bound worth asserting — no promotion within 30 s was seen
once with a full suite running beside it —, so it is run alone; the file name keeps pytest's
default collection away from it):

- every request is admitted: while the slot has no master, redis-py's Cluster client
  retries (up to 10 times, refreshing the slot map) and then fails, and the store admits
  by per-pod limits (`llmgate_redis_local_admits_total`), unless the promoted replica
  answered one of the retries first; admissions of that key wait up to about 4 s, the
  other master's up to about 2 s (the slot map refresh); the store's degraded state is
  one for the whole client, so after such a failure every key is admitted locally for
  `retry_interval`;
- once the replica is promoted, admissions are shared again without a restart;
- settlements are booked once each on the promoted master, including those of tickets
  admitted locally and those whose call failed (queued and replayed), except what the old
  master acknowledged but had not yet replicated when it died (asynchronous replication:
  the last moments before the kill); nothing is booked twice.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from llmgate_sidecar.policy.redis_store import RedisStore, keys_for
from llmgate_sidecar.policy.store import Demand, Ticket

from tests.sidecar.redis_server import RedisClusterSet, RedisServer

COST = 1_000


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisClusterSet]:
    """A cluster of this test's own (a master of it is killed)."""
    cluster = RedisClusterSet(tmp_path, masters=3, replicas=1)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def demand(scope: str) -> Demand:
    return Demand(scope, requests_per_minute=10**6, budget_micros=10**12, period="1d",
                  reserve_micros=COST)


async def test_a_master_killed_during_traffic(cluster: RedisClusterSet) -> None:
    hit, other = "ns/failover", "ns/elsewhere"
    victim = cluster.owner(keys_for(hit)[0])
    while cluster.owner(keys_for(other)[0]) is victim:
        other += "-x"
    store = RedisStore.from_url(cluster.url, timeout=1.0)
    loop = asyncio.get_running_loop()
    killed_at = 0.0
    acked: dict[str, list[float]] = {hit: [], other: []}   # when each settle returned
    stalls: dict[str, list[float]] = {hit: [], other: []}
    origins: dict[str, list[str]] = {hit: [], other: []}

    done = asyncio.Event()

    async def traffic(scope: str) -> None:
        while not done.is_set():
            started = loop.time()
            ticket = await store.admit(demand(scope))
            stalls[scope].append(loop.time() - started)
            assert isinstance(ticket, Ticket)
            origins[scope].append(ticket.origin)
            assert await store.settle(ticket, tokens=1, cost_micros=COST)
            acked[scope].append(loop.time())
            await asyncio.sleep(0.005)

    async def kill() -> RedisServer:
        """Kill the key's master after a second of traffic; stop the traffic two seconds
        after a replica took over."""
        nonlocal killed_at
        await asyncio.sleep(1.0)
        killed_at = loop.time()
        await asyncio.to_thread(victim.stop)
        try:
            return await asyncio.to_thread(cluster.wait_failover, victim, keys_for(hit)[0])
        finally:
            await asyncio.sleep(2.0)
            done.set()

    try:
        try:
            async with asyncio.timeout(60):   # bounded: say what is stuck, never hang
                *_, promoted = await asyncio.gather(traffic(hit), traffic(other), kill())
        except TimeoutError:
            stuck = io.StringIO()
            for task in asyncio.all_tasks():
                task.print_stack(file=stuck)
            pytest.fail(f"traffic did not end within 60 s; {store.health}\n{stuck.getvalue()}")
        assert promoted is not victim
        for _ in range(500):
            if store.health.pending == 0:
                break
            await asyncio.sleep(0.02)
        health = store.health
        assert health.pending == 0
        # Shared again after the failover: the last admissions of both keys are Redis's.
        assert origins[hit][-20:] == ["redis"] * 20
        assert origins[other][-20:] == ["redis"] * 20
        local = origins[hit].count("memory"), origins[other].count("memory")
        assert health.fallbacks == sum(local)
        # Every settlement reached the promoted master once (local tickets' cost too),
        # but what the dead master had not replicated yet.
        spend = await store.spend(hit, "1d")
        settled = len(acked[hit]) * COST
        unreplicated = sum(COST for t in acked[hit] if killed_at - 1.0 <= t <= killed_at)
        assert settled - unreplicated <= spend.spent_micros <= settled
        assert (await store.spend(other, "1d")).spent_micros == len(acked[other]) * COST
        print(f"\nfailover of {hit}: {len(stalls[hit])} requests, longest admission "
              f"{max(stalls[hit]):.2f} s, {local[0]} admitted locally; {other}: longest "
              f"{max(stalls[other]):.2f} s, {local[1]} locally; booked "
              f"{spend.spent_micros // COST} of {len(acked[hit])}; Redis errors "
              f"{health.errors}, orphaned settlements {health.orphaned}")
    finally:
        await store.aclose()
