"""MemoryStore specifics: memory stays bounded (idle keys and old tickets are dropped) while
state that still matters (live tickets, lifetime budgets) is kept."""

from __future__ import annotations

from llmgate_sidecar.policy.store import TOMB_MS, Demand, MemoryStore, Ticket

from tests.sidecar.conftest import FakeClock


async def test_idle_keys_are_swept(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    for i in range(1000):
        ticket = await store.admit(Demand(f"ns/k{i}", requests_per_minute=5))
        assert isinstance(ticket, Ticket)
        await store.settle(ticket, tokens=0, cost_micros=0)
    held = await store.admit(Demand("ns/running", max_parallel=1))
    for scope, period in (("ns/daily", "1d"), ("ns/life", "none")):
        ticket = await store.admit(Demand(scope, budget_micros=10, period=period,
                                          reserve_micros=1))
        assert isinstance(ticket, Ticket)
        await store.settle(ticket, tokens=0, cost_micros=1)
    assert store.scopes == 1003
    clock.advance(2 * 86400)                  # windows empty, the daily period is over
    await store.admit(Demand("ns/new", requests_per_minute=5))
    # Left: the new key, the lifetime budget, and the key whose ticket expired into a tomb
    # (kept so a late settle can still book its cost) until the tomb itself expires.
    assert store.scopes == 3
    assert (await store.spend("ns/life", "none")).spent_micros == 1
    clock.advance(TOMB_MS / 1000)
    await store.admit(Demand("ns/new", requests_per_minute=5))
    assert store.scopes == 2
    assert isinstance(held, Ticket)
    # Forgotten entirely, its settlement still books (the money was spent), once.
    assert await store.settle(held, tokens=0, cost_micros=0) is True
    assert await store.settle(held, tokens=0, cost_micros=0) is False


async def test_settled_tickets_leave_nothing_behind_under_sustained_load(
        clock: FakeClock) -> None:
    """A settled ticket keeps no entry (2,000 req/s kept 240,000 two-minute marks, each
    expiry rescanning all of them: 12-18 ms per request after two minutes), yet a second
    settle of it is still a no-op, however late."""
    store = MemoryStore(clock=clock)
    demand = Demand("ns/busy", requests_per_minute=10**9, budget_micros=10**12, period="1d",
                    reserve_micros=10)
    first = None
    for _ in range(3000):
        ticket = store.admit_now(demand)
        assert isinstance(ticket, Ticket)
        first = first or ticket
        assert store.settle_now(ticket, tokens=1, cost_micros=1)
        clock.advance(0.1)                        # 300 s: past two minutes of marks
    assert store.held == 0
    assert store.settle_now(first, tokens=1, cost_micros=1) is False
    assert (await store.spend("ns/busy", "1d")).spent_micros == 3000
