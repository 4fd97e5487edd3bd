"""RedisStore's batching: what one event-loop iteration queues goes to Redis as one script
call, and no failure of such a call loses, doubles or strands money.

Against real redis-servers; the lost-answer cases put a small TCP proxy between the store
and Redis that forwards every command (so Redis runs it) and, when told to, drops the
connection instead of relaying Redis's answer, or holds the answer back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis
from llmgate_contract.budget import budget_key
from llmgate_contract.redis_client import connect
from llmgate_sidecar.policy.redis_store import MAX_BATCH, RedisStore, keys_for
from llmgate_sidecar.policy.store import Demand, Refusal, Ticket
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot

from tests.sidecar.redis_server import RedisClusterSet, RedisServer
from tests.sidecar.test_store_redis import CountingRedis

BUDGET = Demand("ns/batch", requests_per_minute=1000, budget_micros=100_000_000,
                period="1d", reserve_micros=1_000_000)


class AnswerProxy:
    """TCP proxy to a real Redis. `drop_next` > 0: the next answers to a script call are not
    relayed, the client's connection is closed instead (Redis ran the call, the client
    never hears). `hold` cleared: answers wait until it is set again."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.drop_next = 0
        self.dropped = 0
        self.scripts = 0  # script calls forwarded
        self.hold = asyncio.Event()
        self.hold.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    async def start(self) -> AnswerProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        last = [b""]

        async def upstream() -> None:
            while data := await reader.read(65536):
                last[0] = data
                if b"EVALSHA" in data.upper():
                    self.scripts += 1
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                await self.hold.wait()
                if self.drop_next and b"EVALSHA" in last[0].upper():
                    self.drop_next -= 1
                    self.dropped += 1
                    break
                writer.write(data)
                await writer.drain()
            writer.close()
            up_writer.close()

        for work in (upstream(), downstream()):
            task = asyncio.ensure_future(work)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.fixture
async def proxy(redis_server: RedisServer,
                redis_client: aioredis.Redis) -> AsyncIterator[AnswerProxy]:
    proxy = await AnswerProxy(redis_server.port).start()
    yield proxy
    await proxy.close()


@pytest.fixture
async def proxied(proxy: AnswerProxy) -> AsyncIterator[RedisStore]:
    """A store reaching Redis through `proxy`, retrying Redis 50 ms after a failure."""
    store = RedisStore.from_url(proxy.url, timeout=2.0, retry_interval=0.05)
    yield store
    await store.aclose()


@pytest.fixture
async def counted(redis_server: RedisServer) -> AsyncIterator[tuple[RedisStore, CountingRedis]]:
    """A store on a flushed Redis whose client records each command it sends."""
    client = CountingRedis(host="127.0.0.1", port=redis_server.port, decode_responses=True)
    await client.flushdb()
    client.sent = []
    store = RedisStore(client, owns_client=True)
    yield store, client
    await store.aclose()


async def until(condition: Callable[[], bool | Awaitable[bool]], tries: int = 500) -> None:
    """Poll `condition` (sync or async) every 20 ms, at most `tries` times."""
    for _ in range(tries):
        met = condition()
        if met if isinstance(met, bool) else await met:
            return
        await asyncio.sleep(0.02)
    pytest.fail("the condition did not hold within 10 s")


async def test_one_iteration_admits_and_settles_in_one_call(
        counted: tuple[RedisStore, CountingRedis]) -> None:
    store, client = counted
    await store.admit(BUDGET)                         # the first call loads the script
    client.sent.clear()
    demands = [Demand(f"ns/batch-{i % 3}", requests_per_minute=100,
                      budget_micros=100_000_000, period="1d", reserve_micros=1_000_000)
               for i in range(20)]
    tickets = await asyncio.gather(*(store.admit(d) for d in demands))
    assert client.sent == ["EVALSHA"]                 # 20 admissions, one round trip
    assert all(isinstance(t, Ticket) and t.origin == "redis" for t in tickets)
    assert len({t.id for t in tickets if isinstance(t, Ticket)}) == 20
    client.sent.clear()
    booked = await asyncio.gather(*(store.settle(t, tokens=1, cost_micros=10_000)
                                    for t in tickets if isinstance(t, Ticket)))
    assert booked == [True] * 20 and client.sent == ["EVALSHA"]
    for i in range(3):
        spend = await store.spend(f"ns/batch-{i}", "1d")
        count = len([d for d in demands if d.scope == f"ns/batch-{i}"])
        assert (spend.spent_micros, spend.reserved_micros) == (count * 10_000, 0)


async def test_a_settlement_in_the_same_call_frees_budget_for_the_admission_after_it(
        redis_client: aioredis.Redis) -> None:
    store = RedisStore(redis_client)
    one = Demand("ns/one", budget_micros=1_000_000, period="1d", reserve_micros=1_000_000)
    try:
        first = await store.admit(one)
        assert isinstance(first, Ticket)
        assert isinstance(await store.admit(one), Refusal)   # its reservation holds it all
        settled, second = await asyncio.gather(
            store.settle(first, tokens=1, cost_micros=0), store.admit(one))
        assert settled and isinstance(second, Ticket)
    finally:
        await store.aclose()


async def test_a_busy_iteration_is_split_into_calls_of_at_most_max_batch(
        counted: tuple[RedisStore, CountingRedis]) -> None:
    store, client = counted
    big = Demand("ns/big", budget_micros=10**12, period="1d", reserve_micros=1_000_000)
    await store.admit(big)
    client.sent.clear()
    outcomes = await asyncio.gather(*(store.admit(big) for _ in range(MAX_BATCH * 2 + 1)))
    assert client.sent == ["EVALSHA"] * 3
    assert all(isinstance(o, Ticket) for o in outcomes)
    spend = await store.spend(big.scope, "1d")
    assert spend.reserved_micros == (MAX_BATCH * 2 + 2) * 1_000_000


async def test_a_lost_answer_books_every_settlement_of_the_batch_exactly_once(
        proxy: AnswerProxy, proxied: RedisStore,
        redis_client: aioredis.Redis) -> None:
    store = proxied
    tickets = await asyncio.gather(*(store.admit(BUDGET) for _ in range(5)))
    assert all(isinstance(t, Ticket) for t in tickets)
    proxy.drop_next = 1    # Redis runs the next call; its answer never arrives
    booked = await asyncio.gather(*(
        store.settle(t, tokens=1, cost_micros=100_000 * (i + 1))
        for i, t in enumerate(tickets) if isinstance(t, Ticket)))
    assert booked == [True] * 5 and proxy.dropped == 1
    # The store could not know whether Redis ran it: every settlement was queued and is
    # replayed in the background; the settled marks make the replay book nothing twice.
    await until(lambda: store.health.pending == 0)
    spend = await store.spend(BUDGET.scope, "1d")
    assert (spend.spent_micros, spend.reserved_micros) == (1_500_000, 0)
    assert store.health.orphaned == 0 and store.health.errors == 1


async def test_a_lost_answer_to_admissions_leaves_reservations_held_never_money_unbooked(
        proxy: AnswerProxy, proxied: RedisStore,
        redis_client: aioredis.Redis) -> None:
    store = proxied
    await store.admit(Demand("ns/warm"))               # a pooled connection, the script
    proxy.drop_next = 1
    lost = await asyncio.gather(*(store.admit(BUDGET) for _ in range(3)))
    # failOpen: admitted by the pod's own limits; Redis ran the call, so the three
    # reservations it made are held there until their lease ends (over, never under).
    assert [t.origin for t in lost if isinstance(t, Ticket)] == ["memory"] * 3
    spend = await store.spend(BUDGET.scope, "1d")
    assert spend.reserved_micros == 3_000_000
    for ticket in lost:
        assert isinstance(ticket, Ticket)
        assert await store.settle(ticket, tokens=1, cost_micros=200_000)
    # Spend under local tickets reaches the shared budget too, once.
    async def booked() -> bool:
        spent = await redis_client.hget(budget_key(BUDGET.scope), "spent")
        return int(spent or 0) >= 600_000
    await until(booked)
    await until(lambda: store.health.pending == 0)
    await asyncio.sleep(0.1)
    assert int(await redis_client.hget(budget_key(BUDGET.scope), "spent") or 0) == 600_000


async def test_cost_only_bookings_are_replayed_once(
        proxy: AnswerProxy, proxied: RedisStore,
        redis_client: aioredis.Redis) -> None:
    """Spend made under a local ticket (an outage) is booked under an id of its own, so a
    replay after a lost answer books it once, like a ticket's settlement."""
    store = proxied
    await store.admit(Demand("ns/warm"))
    proxy.drop_next = 1
    local = await store.admit(BUDGET)                  # lost answer: admitted locally
    assert isinstance(local, Ticket) and local.origin == "memory"
    proxy.drop_next = 1                                # and the cost-only booking too
    assert await store.settle(local, tokens=1, cost_micros=250_000)
    await until(lambda: proxy.dropped == 2 and store.health.pending == 0)
    spent = await redis_client.hget(budget_key(BUDGET.scope), "spent")
    assert int(spent or 0) == 250_000


async def test_a_call_sent_again_after_a_lost_answer_admits_once(
        proxy: AnswerProxy, redis_client: aioredis.Redis) -> None:
    """The Cluster client sends a command again when its connection drops: the same
    admissions, with the same ticket ids. They consume once."""
    retrying = aioredis.Redis.from_url(proxy.url, decode_responses=True,
                                       retry=Retry(NoBackoff(), 2))
    store = RedisStore(retrying, owns_client=True)
    try:
        await store.admit(Demand("ns/warm"))
        proxy.drop_next = 1
        tickets = await asyncio.gather(*(store.admit(BUDGET) for _ in range(2)))
        assert [t.origin for t in tickets if isinstance(t, Ticket)] == ["redis"] * 2
        assert proxy.dropped == 1 and store.health.errors == 0
        spend = await store.spend(BUDGET.scope, "1d")
        assert spend.reserved_micros == 2_000_000               # not 4
        requests = await redis_client.hgetall(keys_for(BUDGET.scope)[0])
        assert sum(int(v) for v in requests.values()) == 2      # counted once each
        for ticket in tickets:
            assert isinstance(ticket, Ticket)
            await store.settle(ticket, tokens=1, cost_micros=1)
        assert (await store.spend(BUDGET.scope, "1d")).reserved_micros == 0
    finally:
        await store.aclose()


async def test_an_admission_cancelled_while_its_call_runs_gives_its_reservation_back(
        proxy: AnswerProxy, redis_client: aioredis.Redis) -> None:
    store = RedisStore.from_url(proxy.url, timeout=2.0)
    try:
        await store.admit(Demand("ns/warm"))
        proxy.hold.clear()
        asked = proxy.scripts
        admission = asyncio.ensure_future(store.admit(BUDGET))
        await until(lambda: proxy.scripts > asked)        # Redis has the call (and runs it)
        admission.cancel()                                # the client left meanwhile
        proxy.hold.set()
        with pytest.raises(asyncio.CancelledError):
            await admission

        async def released() -> bool:
            spend = await store.spend(BUDGET.scope, "1d")
            return spend.reserved_micros == 0 and spend.spent_micros == 0
        await until(released)
        assert await redis_client.zcard(keys_for(BUDGET.scope)[2]) == 0   # no lease left
    finally:
        await store.aclose()


async def test_a_cluster_batch_is_split_by_slot(redis_cluster: RedisClusterSet) -> None:
    redis_cluster.flush()
    store = RedisStore.from_url(redis_cluster.url)
    scopes = [f"ns/spread-{i}" for i in range(24)]
    slots = {key_slot(keys_for(s)[0].encode()) for s in scopes}
    assert len({min(slot // (16384 // 3), 2) for slot in slots}) == 3   # on all 3 masters
    demands = [Demand(s, requests_per_minute=1, budget_micros=5_000_000, period="1d",
                      reserve_micros=1_000_000) for s in scopes]
    try:
        first = await asyncio.gather(*(store.admit(d) for d in demands))
        assert all(isinstance(t, Ticket) and t.origin == "redis" for t in first)
        assert store.health.errors == 0                   # no CROSSSLOT, no fallback
        again = await asyncio.gather(*(store.admit(d) for d in demands))
        assert all(isinstance(r, Refusal) and r.kind == "requests" for r in again)
        await asyncio.gather(*(store.settle(t, tokens=1, cost_micros=300_000)
                               for t in first if isinstance(t, Ticket)))
        spends = await asyncio.gather(*(store.spend(s, "1d") for s in scopes))
        assert {(s.spent_micros, s.reserved_micros) for s in spends} == {(300_000, 0)}
    finally:
        await store.aclose()


def test_the_cluster_client_is_told_apart() -> None:
    from llmgate_contract.redis_client import slot_of

    standalone = connect("redis://127.0.0.1:1/0", decode_responses=True, timeout=1.0)
    cluster = connect("redis+cluster://127.0.0.1:1", decode_responses=True, timeout=1.0)
    assert slot_of(standalone) is None
    slot = slot_of(cluster)
    assert slot is not None and slot("llmgate:{a/b}:budget") == key_slot(b"a/b")
