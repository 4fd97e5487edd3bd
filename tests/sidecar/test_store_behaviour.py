"""One behavioural suite for every Store: MemoryStore and RedisStore (real redis-server),
both on an injected clock, so the Lua scripts and the Python twin are held to the same
semantics: sliding windows, parallel slots, reservations, settle, leases, periods."""

from __future__ import annotations

import pytest
from llmgate_sidecar.policy.store import (
    IN_FLIGHT_RETRY_MS,
    LIFETIME_RETRY_MS,
    Demand,
    Refusal,
    Store,
    Ticket,
    period_bounds,
)

from tests.sidecar.conftest import FakeClock

USD = 1_000_000


async def admitted(store: Store, demand: Demand) -> Ticket:
    outcome = await store.admit(demand)
    assert isinstance(outcome, Ticket), outcome
    return outcome


async def refused(store: Store, demand: Demand) -> Refusal:
    outcome = await store.admit(demand)
    assert isinstance(outcome, Refusal), outcome
    return outcome


async def test_requests_per_minute_retry_after_is_when_the_oldest_request_leaves(
        store: Store, clock: FakeClock) -> None:
    demand = Demand("ns/a", requests_per_minute=3)
    first = await admitted(store, demand)            # second 1_700_000_000, at .250
    assert first.remaining_requests == 2
    clock.advance(10)
    await admitted(store, demand)
    clock.advance(10)
    assert (await admitted(store, demand)).remaining_requests == 0
    clock.advance(10)
    refusal = await refused(store, demand)
    assert (refusal.kind, refusal.detail) == ("requests", "rate")
    # The first request's bucket leaves the window at second 1_700_000_060.000.
    assert refusal.retry_after_ms == 29_750
    clock.advance(29.749)
    assert (await refused(store, demand)).retry_after_ms == 1
    clock.advance(0.001)
    await admitted(store, demand)


async def test_no_double_burst_at_a_minute_boundary(store: Store, clock: FakeClock) -> None:
    clock.now = 1_700_000_039.5                       # 0.5 s before a fixed minute ends
    demand = Demand("ns/burst", requests_per_minute=10)
    for _ in range(10):
        await admitted(store, demand)
    clock.advance(1)                                  # a fixed window would reset here
    refusal = await refused(store, demand)
    assert refusal.kind == "requests"
    assert refusal.retry_after_ms == 58_500


async def test_tokens_estimate_is_corrected_by_settle(store: Store, clock: FakeClock) -> None:
    demand = Demand("ns/t", tokens_per_minute=1000, tokens=600)
    ticket = await admitted(store, demand)
    assert ticket.remaining_tokens == 400
    refusal = await refused(store, demand)
    assert refusal.kind == "tokens"
    assert await store.settle(ticket, tokens=100, cost_micros=0)
    second = await admitted(store, demand)            # 100 real + 600 estimated
    assert second.remaining_tokens == 300
    # Using more than estimated counts too: 100 + 900 leaves no room for 600 more.
    assert await store.settle(second, tokens=900, cost_micros=0)
    assert (await refused(store, demand)).kind == "tokens"


async def test_a_request_larger_than_tokens_per_minute_is_refused_as_too_large(
        store: Store) -> None:
    refusal = await refused(store, Demand("ns/big", tokens_per_minute=1000, tokens=1001))
    assert (refusal.kind, refusal.detail) == ("tokens", "too-large")


async def test_parallel_slots_are_released_by_settle(store: Store) -> None:
    demand = Demand("ns/p", max_parallel=2)
    one = await admitted(store, demand)
    await admitted(store, demand)
    refusal = await refused(store, demand)
    assert (refusal.kind, refusal.retry_after_ms) == ("parallel", IN_FLIGHT_RETRY_MS)
    await store.settle(one, tokens=0, cost_micros=0)
    await admitted(store, demand)


async def test_reservations_hold_the_budget_and_settle_releases_the_unused_part(
        store: Store) -> None:
    demand = Demand("ns/b", budget_micros=1 * USD, period="1d", reserve_micros=300_000)
    tickets = [await admitted(store, demand) for _ in range(3)]
    assert tickets[-1].remaining_micros == 100_000
    refusal = await refused(store, demand)
    assert (refusal.kind, refusal.detail) == ("budget", "in-flight")
    assert refusal.retry_after_ms == IN_FLIGHT_RETRY_MS
    assert await store.settle(tickets[0], tokens=10, cost_micros=100_000)
    spend = await store.spend("ns/b", "1d")
    assert (spend.spent_micros, spend.reserved_micros) == (100_000, 600_000)
    assert (await admitted(store, demand)).remaining_micros == 0
    assert (await refused(store, demand)).kind == "budget"


async def test_settling_twice_counts_once(store: Store) -> None:
    demand = Demand("ns/i", budget_micros=USD, period="1h", reserve_micros=500_000,
                    max_parallel=1)
    ticket = await admitted(store, demand)
    assert await store.settle(ticket, tokens=5, cost_micros=200_000) is True
    assert await store.settle(ticket, tokens=5, cost_micros=200_000) is False
    spend = await store.spend("ns/i", "1h")
    assert (spend.spent_micros, spend.reserved_micros) == (200_000, 0)
    await admitted(store, demand)                     # the slot was released once, not twice
    assert (await refused(store, demand)).kind == "parallel"


async def test_exhausted_budget_retries_when_the_period_resets(store: Store,
                                                               clock: FakeClock) -> None:
    demand = Demand("ns/x", budget_micros=USD, period="1h", reserve_micros=400_000)
    ticket = await admitted(store, demand)
    await store.settle(ticket, tokens=0, cost_micros=700_000)
    refusal = await refused(store, demand)
    _, end = period_bounds("1h", int(clock() * 1000))
    assert (refusal.kind, refusal.detail) == ("budget", "exhausted")
    assert refusal.retry_after_ms == 2_799_750        # until 2023-11-14T23:00:00Z
    assert end is not None
    clock.now = end / 1000                            # the next hour: spend starts again at 0
    await admitted(store, demand)
    spend = await store.spend("ns/x", "1h")
    assert (spend.spent_micros, spend.period_start_ms) == (0, end)


async def test_calendar_month_resets_on_the_first(store: Store, clock: FakeClock) -> None:
    clock.now = 1_706_742_000.0                       # 2024-01-31T23:00:00Z
    demand = Demand("ns/m", budget_micros=USD, period="calendar-month", reserve_micros=USD)
    ticket = await admitted(store, demand)
    await store.settle(ticket, tokens=0, cost_micros=USD)
    refusal = await refused(store, demand)
    assert refusal.retry_after_ms == 3_600_000
    clock.advance(3600)
    await admitted(store, demand)


async def test_an_exhausted_budget_refuses_even_free_requests(store: Store) -> None:
    paid = Demand("ns/free", budget_micros=USD, period="1d", reserve_micros=USD)
    await store.settle(await admitted(store, paid), tokens=0, cost_micros=USD)
    free = Demand("ns/free", budget_micros=USD, period="1d", reserve_micros=0)
    assert (await refused(store, free)).detail == "exhausted"
    assert (await refused(store, Demand("ns/zero", budget_micros=0, period="1d"))).kind \
        == "budget"


async def test_lifetime_budget_never_resets(store: Store, clock: FakeClock) -> None:
    demand = Demand("ns/l", budget_micros=USD, period="none", reserve_micros=USD)
    await store.settle(await admitted(store, demand), tokens=0, cost_micros=USD)
    clock.advance(400 * 86400)
    refusal = await refused(store, demand)
    assert (refusal.detail, refusal.retry_after_ms) == ("exhausted", LIFETIME_RETRY_MS)
    assert (await store.spend("ns/l", "none")).spent_micros == USD


async def test_a_reservation_larger_than_the_budget_is_refused_as_too_large(
        store: Store) -> None:
    refusal = await refused(store, Demand("ns/r", budget_micros=USD, period="1d",
                                          reserve_micros=USD + 1))
    assert (refusal.kind, refusal.detail) == ("budget", "too-large")


async def test_a_refusal_consumes_nothing(store: Store) -> None:
    blocked = Demand("ns/n", requests_per_minute=1, tokens_per_minute=100, tokens=50,
                     max_parallel=1, budget_micros=100, period="1d", reserve_micros=101)
    assert (await refused(store, blocked)).kind == "budget"
    ok = await admitted(store, Demand("ns/n", requests_per_minute=1, tokens_per_minute=100,
                                      tokens=100, max_parallel=1, budget_micros=100,
                                      period="1d", reserve_micros=100))
    assert (ok.remaining_requests, ok.remaining_tokens, ok.remaining_micros) == (0, 0, 0)


async def test_the_longest_retry_after_wins_when_several_limits_refuse(
        store: Store, clock: FakeClock) -> None:
    demand = Demand("ns/w", requests_per_minute=1, max_parallel=1, budget_micros=10,
                    period="1d", reserve_micros=10)
    await admitted(store, demand)
    refusal = await refused(store, demand)
    assert refusal.kind == "requests"                 # ~60 s beats parallel's and budget's 1 s
    assert refusal.retry_after_ms == 59_750


async def test_a_ticket_never_settled_is_released_after_its_lease(store: Store,
                                                                  clock: FakeClock) -> None:
    demand = Demand("ns/lease", max_parallel=1, budget_micros=USD, period="1d",
                    reserve_micros=USD, lease_ms=30_000)
    leaked = await admitted(store, demand)
    clock.advance(29.999)
    assert (await refused(store, demand)).kind in ("parallel", "budget")
    clock.advance(0.001)
    fresh = await admitted(store, demand)            # slot and reservation came back
    assert (await store.spend("ns/lease", "1d")).reserved_micros == USD
    # The leaked request did finish and cost money after all: a late settle books the cost
    # (but releases nothing twice), and only once.
    assert await store.settle(leaked, tokens=0, cost_micros=250_000) is True
    assert await store.settle(leaked, tokens=0, cost_micros=250_000) is False
    spend = await store.spend("ns/lease", "1d")
    assert (spend.spent_micros, spend.reserved_micros) == (250_000, USD)
    await store.settle(fresh, tokens=0, cost_micros=0)
    assert (await store.spend("ns/lease", "1d")).reserved_micros == 0


async def test_keys_are_independent(store: Store) -> None:
    await admitted(store, Demand("ns/one", requests_per_minute=1))
    await admitted(store, Demand("ns/two", requests_per_minute=1))
    await admitted(store, Demand("other/one", requests_per_minute=1))
    assert (await refused(store, Demand("ns/one", requests_per_minute=1))).kind == "requests"


@pytest.mark.parametrize("period", ["1h", "1d", "7d", "30d", "calendar-month", "none"])
@pytest.mark.parametrize("now", [
    0.0, 951_782_400.0, 951_868_799.999, 1_709_164_800.0,  # 2000-02-29 (both ends), 2024-02-29
    1_704_067_199.999, 1_704_067_200.0,                # the turn of 2024
    1_700_000_000.25, 4_102_444_800.0,                 # 2100-01-01 (not a leap year)
])
async def test_both_stores_compute_the_same_period_bounds(store: Store, clock: FakeClock,
                                                          period: str, now: float) -> None:
    clock.now = now
    spend = await store.spend("ns/period", period)
    start, end = period_bounds(period, int(now * 1000))
    assert (spend.period_start_ms, spend.period_end_ms) == (start, end)
    assert start <= int(now * 1000) and (end is None or int(now * 1000) < end)
