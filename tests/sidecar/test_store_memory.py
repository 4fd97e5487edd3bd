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
