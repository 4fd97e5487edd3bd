"""VirtualKey spend status end to end: the real operator (against `Emu`) reads a real
redis-server in which the sidecar's own RedisStore booked spend, and shows it in status.

Spend is booked exactly as a sidecar books it (admit with a reservation, settle with the
real cost), so a change of key layout or period arithmetic on either side fails here.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from llmgate_contract.budget import budget_key, key_scope, period_bounds
from llmgate_operator.spend import BudgetRef, SpendReader, SpendTracker
from llmgate_sidecar.policy.redis_store import RedisStore
from llmgate_sidecar.policy.store import Demand, Ticket
from redis.crc import key_slot

from tests.conftest import free_port
from tests.operator import harness as h
from tests.operator.emulator import Emu
from tests.sidecar.redis_server import RedisClusterSet, RedisServer

pytestmark = pytest.mark.kmock(cls=Emu)

NS = "team-a"
LIMIT_MICROS = 50_000  # "0.05"


def budgeted(name: str, limit: str = "0.05", period: str = "30d") -> dict[str, Any]:
    return {"apiVersion": "llmgate.io/v1alpha1", "kind": "VirtualKey",
            "metadata": {"name": name}, "spec": {"budget": {"limit": limit, "period": period}}}


@pytest.fixture
async def sidecar_store(redis_server: RedisServer) -> AsyncIterator[RedisStore]:
    """The sidecar's store on a flushed database of the session's redis-server."""
    store = RedisStore.from_url(redis_server.url)
    await store.client.flushdb()
    try:
        yield store
    finally:
        await store.aclose()


async def book(store: RedisStore, key: str, cost_micros: int) -> None:
    """One request's spend, the way the sidecar's Limiter books it."""
    ticket = await store.admit(Demand(scope=f"{NS}/{key}", budget_micros=LIMIT_MICROS,
                                      period="30d", reserve_micros=1_000))
    assert isinstance(ticket, Ticket), ticket
    assert await store.settle(ticket, tokens=10, cost_micros=cost_micros)


def status(k8s: Any, name: str) -> dict[str, Any]:
    return dict((h.cr(k8s, "VirtualKey", NS, name) or {}).get("status") or {})


def condition(k8s: Any, name: str, kind: str) -> dict[str, Any] | None:
    return next((c for c in status(k8s, name).get("conditions") or []
                 if c.get("type") == kind), None)


def spend_is(k8s: Any, name: str, amount: str) -> dict[str, Any] | None:
    spend = status(k8s, name).get("spend")
    return spend if spend and spend.get("amount") == amount else None


def events(k8s: Any, reason: str) -> list[dict[str, Any]]:
    resource = k8s.resource("v1/events")
    return [dict(o.raw) for (r, _, _), o in k8s.objects.items()
            if r == resource and not o.deleted and o.raw.get("reason") == reason]


async def metric(settings: Any, sample: str) -> float | None:
    url = f"http://127.0.0.1:{settings.ops_port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return None


async def test_spend_booked_by_the_sidecar_shows_in_status_and_exhausts(
        k8s: Any, redis_server: RedisServer, sidecar_store: RedisStore) -> None:
    async with h.running_operator(k8s, redis_url=redis_server.url, spend_seconds=0.2):
        await h.create(k8s, NS, budgeted("chat"))
        await h.create(k8s, NS, {**budgeted("idle"), "metadata": {"name": "idle"}})
        await book(sidecar_store, "chat", 20_000)

        spend = await h.eventually(lambda: spend_is(k8s, "chat", "0.02"),
                                   what="the booked spend in status")
        start_ms = period_bounds("30d", int(datetime.now(UTC).timestamp() * 1000))[0]
        start = datetime.fromtimestamp(start_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert spend["limit"] == "0.05" and spend["periodStart"] == start
        within = condition(k8s, "chat", "BudgetExhausted")
        assert within is not None and within["status"] == "False"
        assert within["reason"] == "WithinBudget"
        assert await h.eventually(lambda: spend_is(k8s, "idle", "0.00"),
                                  what="a key with no spend shows zero")

        await book(sidecar_store, "chat", 30_000)
        exhausted = await h.eventually(
            lambda: (c := condition(k8s, "chat", "BudgetExhausted")) and c["status"] == "True"
            and c, what="BudgetExhausted once spend reaches the limit")
        assert exhausted["reason"] == "BudgetExhausted"
        assert "spent $0.05 of $0.05" in exhausted["message"]
        assert status(k8s, "chat")["spend"]["amount"] == "0.05"
        ready = h.ready(k8s, "VirtualKey", NS, "chat")
        assert ready is not None and ready["status"] == "True"
        warning = await h.eventually(lambda: events(k8s, "BudgetExhausted"),
                                     what="a Warning Event about the exhausted budget")
        assert warning[0]["type"] == "Warning"
        assert warning[0]["involvedObject"]["name"] == "chat"
        # The sidecar refuses the key now too: both sides agree on the same numbers.
        refused = await sidecar_store.admit(Demand(scope=f"{NS}/chat",
                                                   budget_micros=LIMIT_MICROS, period="30d"))
        assert not isinstance(refused, Ticket) and refused.detail == "exhausted"

        await h.patch(k8s, h.cr_path("VirtualKey", NS, "chat"), {"spec": {"budget": None}})
        await h.eventually(lambda: "spend" not in status(k8s, "chat")
                           and condition(k8s, "chat", "BudgetExhausted") is None
                           and h.ready(k8s, "VirtualKey", NS, "chat"),
                           what="spend and BudgetExhausted gone with the budget")


async def test_unchanged_spend_never_rewrites_status(
        k8s: Any, redis_server: RedisServer, sidecar_store: RedisStore) -> None:
    async with h.running_operator(k8s, redis_url=redis_server.url,
                                  spend_seconds=0.2) as settings:
        await h.create(k8s, NS, budgeted("steady"))
        await book(sidecar_store, "steady", 1_000)
        await h.eventually(lambda: spend_is(k8s, "steady", "0.001"), what="spend shown")
        # kopf writes its own bookkeeping annotation once the create handler is done.
        await h.eventually(lambda: ((h.cr(k8s, "VirtualKey", NS, "steady") or {})["metadata"]
                                    .get("annotations") or {})
                           .get("llmgate.io/last-handled-configuration"),
                           what="kopf done with the new key")
        version = h.must(k8s, "llmgate.io/v1alpha1/virtualkeys", NS,
                         "steady")["metadata"]["resourceVersion"]
        polls = await metric(settings, 'llmgate_operator_spend_polls_total{result="success"}')
        assert polls is not None

        async def three_more_polls() -> bool:
            now = await metric(settings,
                               'llmgate_operator_spend_polls_total{result="success"}')
            return now is not None and now >= polls + 3
        await h.eventually_async(three_more_polls, what="more spend polls")
        assert h.must(k8s, "llmgate.io/v1alpha1/virtualkeys", NS,
                      "steady")["metadata"]["resourceVersion"] == version


async def test_redis_outage_keeps_the_last_status_and_is_counted(
        k8s: Any, tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    store = RedisStore.from_url(server.url)
    try:
        async with h.running_operator(k8s, redis_url=server.url,
                                      spend_seconds=0.2) as settings:
            await h.create(k8s, NS, budgeted("chat"))
            await book(store, "chat", 60_000)
            await h.eventually(functools.partial(spend_is, k8s, "chat", "0.06"),
                               what="spend shown")
            server.stop()

            async def errors_counted() -> bool:
                up = await metric(settings, "llmgate_operator_spend_store_up")
                err = await metric(settings,
                                   'llmgate_operator_spend_polls_total{result="error"}')
                return up == 0 and err is not None and err >= 2
            await h.eventually_async(errors_counted, what="failed polls in /metrics")
            shown = status(k8s, "chat")
            assert shown["spend"]["amount"] == "0.06"  # the last status stays
            budget = condition(k8s, "chat", "BudgetExhausted")
            assert budget is not None and budget["status"] == "True"

            server.start()  # same port, empty: a new period of nothing spent, as Redis says
            await h.eventually(functools.partial(spend_is, k8s, "chat", "0.00"),
                               what="spend current again once Redis answers")
    finally:
        await store.aclose()
        server.stop()


async def test_reader_reads_what_the_sidecar_booked_in_one_round_trip(
        redis_server: RedisServer, sidecar_store: RedisStore) -> None:
    await book(sidecar_store, "a", 12_345)
    reader = SpendReader.from_url(redis_server.url)
    tracker = SpendTracker(reader)
    try:
        now_ms, spent = await reader.read([BudgetRef(NS, "a", "30d"), BudgetRef(NS, "b", "1h"),
                                           BudgetRef(NS, "a", "1d")])
        # A hash of another period length counts as nothing spent in this one.
        assert spent == [12_345, 0, 0]
        assert abs(now_ms - datetime.now(UTC).timestamp() * 1000) < 600_000  # Redis's clock
        bodies = [{**budgeted("a"), "metadata": {"name": "a", "namespace": NS}},
                  {**budgeted("z"), "metadata": {"name": "z", "namespace": "other"}}]
        assert await tracker.poll(bodies) == {NS, "other"}
        assert await tracker.poll(bodies) == set()  # nothing changed: nothing to rewrite
        assert tracker.readings(NS)["a"].spent_micros == 12_345
        assert await tracker.poll(bodies[:1]) == set()
        assert tracker.readings("other") == {}  # deleted keys are forgotten
    finally:
        await reader.aclose()


async def test_reader_reads_spend_booked_on_a_redis_cluster(
        redis_cluster: RedisClusterSet) -> None:
    """Keys of different virtual keys live in different slots (and nodes): the reader's one
    pipeline (TIME plus one HMGET per key) is split across the masters and still answers."""
    store = RedisStore.from_url(redis_cluster.url)
    await store.client.flushdb()
    reader = SpendReader.from_url(redis_cluster.url)
    names = [f"k{i}" for i in range(12)]
    try:
        for i, name in enumerate(names):
            await book(store, name, 1_000 + i)
        slots = {key_slot(budget_key(key_scope(NS, name)).encode()) for name in names}
        assert len({slot * 3 // 16384 for slot in slots}) == 3  # all three masters hold some
        _, spent = await reader.read([BudgetRef(NS, name, "30d") for name in names])
        assert spent == [1_000 + i for i in range(len(names))]
    finally:
        await reader.aclose()
        await store.aclose()


async def test_reader_on_a_dead_port_fails_without_losing_readings() -> None:
    reader = SpendReader.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    tracker = SpendTracker(reader)
    try:
        assert await tracker.poll([{**budgeted("a"),
                                    "metadata": {"name": "a", "namespace": NS}}]) == set()
        assert tracker.readings(NS) == {}
    finally:
        await reader.aclose()
