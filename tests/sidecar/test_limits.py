"""Limiter: VirtualKey policy -> one atomic store demand; refusals -> RateLimited with the
right kind, Retry-After and message; USD handled as exact micro-dollars; periods computed
as documented."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from llmgate_contract.config import Budget, Limits, VirtualKey
from llmgate_sidecar.errors import RateLimited
from llmgate_sidecar.policy.limits import Limiter
from llmgate_sidecar.policy.store import MemoryStore, period_bounds, usd_to_micros

from tests.sidecar.conftest import FakeClock


def key(**spec: object) -> VirtualKey:
    return VirtualKey.from_data({"name": "chatbot", **spec})


@pytest.fixture
def memory(clock: FakeClock) -> MemoryStore:
    return MemoryStore(clock=clock)


@pytest.fixture
def limiter(memory: MemoryStore, clock: FakeClock) -> Limiter:
    return Limiter(memory, clock=clock)


async def test_requests_per_minute_raise_rate_limited_with_retry_after(
        limiter: Limiter) -> None:
    policy = key(limits=Limits(requests_per_minute=2))
    for _ in range(2):
        await limiter.admit(policy, namespace="team", estimated_tokens=10,
                            reserve_usd=Decimal(0))
    with pytest.raises(RateLimited) as caught:
        await limiter.admit(policy, namespace="team", estimated_tokens=10,
                            reserve_usd=Decimal(0))
    error = caught.value
    assert (error.status, error.kind, error.retry_after) == (429, "requests", 59.75)
    assert error.headers["Retry-After"] == "60"
    assert "2 requests per minute" in error.message and "'chatbot'" in error.message


async def test_each_kind_is_reported(limiter: Limiter) -> None:
    policy = key(limits=Limits(tokens_per_minute=1000, max_parallel=1))
    with pytest.raises(RateLimited) as too_big:
        await limiter.admit(policy, namespace="team", estimated_tokens=1500,
                            reserve_usd=Decimal(0))
    assert too_big.value.kind == "tokens" and "1500 tokens" in too_big.value.message
    await limiter.admit(policy, namespace="team", estimated_tokens=100, reserve_usd=Decimal(0))
    with pytest.raises(RateLimited) as parallel:
        await limiter.admit(policy, namespace="team", estimated_tokens=100,
                            reserve_usd=Decimal(0))
    assert (parallel.value.kind, parallel.value.retry_after) == ("parallel", 1.0)


async def test_budget_reservation_settle_and_status(limiter: Limiter, clock: FakeClock) -> None:
    policy = key(budget=Budget(limit=Decimal("1.00"), period="1d"))
    tickets = [await limiter.admit(policy, namespace="team", estimated_tokens=0,
                                   reserve_usd=Decimal("0.40")) for _ in range(2)]
    with pytest.raises(RateLimited) as held:
        await limiter.admit(policy, namespace="team", estimated_tokens=0,
                            reserve_usd=Decimal("0.40"))
    assert (held.value.kind, held.value.retry_after) == ("budget", 1.0)
    assert "in flight" in held.value.message
    await limiter.settle(tickets[0], tokens=100, cost_usd=Decimal("0.123456"))
    await limiter.settle(tickets[0], tokens=100, cost_usd=Decimal("0.123456"))  # idempotent
    status = await limiter.spend(policy, namespace="team")
    assert (status.spent, status.reserved) == (Decimal("0.123456"), Decimal("0.4"))
    assert status.period_start == datetime(2023, 11, 14, tzinfo=UTC)
    assert status.period_end == datetime(2023, 11, 15, tzinfo=UTC)
    assert not status.exhausted


async def test_exhausted_budget_says_when_it_resets(limiter: Limiter, clock: FakeClock) -> None:
    policy = key(budget=Budget(limit=Decimal("0.50"), period="1h"))
    ticket = await limiter.admit(policy, namespace="team", estimated_tokens=0,
                                 reserve_usd=Decimal("0.50"))
    await limiter.settle(ticket, tokens=0, cost_usd=Decimal("0.50"))
    with pytest.raises(RateLimited) as caught:
        await limiter.admit(policy, namespace="team", estimated_tokens=0,
                            reserve_usd=Decimal("0.01"))
    assert caught.value.kind == "budget" and caught.value.code == "budget_exceeded"
    assert caught.value.retry_after == 2799.75          # until 23:00:00 UTC
    assert caught.value.headers["Retry-After"] == "2800"
    assert (await limiter.spend(policy, namespace="team")).exhausted


async def test_a_request_that_cannot_fit_the_budget_names_its_worst_case(
        limiter: Limiter) -> None:
    policy = key(budget=Budget(limit=Decimal("0.10"), period="none"))
    with pytest.raises(RateLimited) as caught:
        await limiter.admit(policy, namespace="team", estimated_tokens=0,
                            reserve_usd=Decimal("0.25"))
    assert "$0.25" in caught.value.message and "max_tokens" in caught.value.message


async def test_keys_without_limits_never_touch_the_store(limiter: Limiter,
                                                         memory: MemoryStore) -> None:
    ticket = await limiter.admit(key(), namespace="team", estimated_tokens=10,
                                 reserve_usd=Decimal("5"))
    await limiter.settle(ticket, tokens=10, cost_usd=Decimal("0.01"))
    assert memory.scopes == 0


async def test_same_name_in_two_namespaces_are_two_keys(limiter: Limiter) -> None:
    policy = key(limits=Limits(requests_per_minute=1))
    first = await limiter.admit(policy, namespace="a", estimated_tokens=0,
                                reserve_usd=Decimal(0))
    second = await limiter.admit(policy, namespace="b", estimated_tokens=0,
                                 reserve_usd=Decimal(0))
    assert (first.scope, second.scope) == ("a/chatbot", "b/chatbot")


async def test_settling_after_the_lease_ran_out_is_booked_and_logged(
        memory: MemoryStore, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    limiter = Limiter(memory, clock=clock, lease=30)
    policy = key(budget=Budget(limit=Decimal("1"), period="1d"))
    ticket = await limiter.admit(policy, namespace="n", estimated_tokens=0,
                                 reserve_usd=Decimal("1"))
    clock.advance(31)
    await limiter.admit(policy, namespace="n", estimated_tokens=0, reserve_usd=Decimal("0.5"))
    await limiter.settle(ticket, tokens=0, cost_usd=Decimal("0.2"))
    assert (await limiter.spend(policy, namespace="n")).spent == Decimal("0.2")
    assert any("outlived its 30 s lease" in r.getMessage() for r in caplog.records)


async def test_reservations_round_up_and_costs_round_to_the_micro_dollar() -> None:
    assert usd_to_micros(Decimal("0.0000011"), round_up=True) == 2
    assert usd_to_micros(Decimal("0.0000015")) == 2
    assert usd_to_micros(Decimal("0.0000014")) == 1
    assert usd_to_micros(Decimal("25.00")) == 25_000_000


async def test_negative_inputs_are_rejected(limiter: Limiter) -> None:
    with pytest.raises(ValueError):
        await limiter.admit(key(), namespace="n", estimated_tokens=-1, reserve_usd=Decimal(0))


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(("period", "now", "start", "end"), [
    ("1h", ms(2024, 3, 5, 10, 59), ms(2024, 3, 5, 10), ms(2024, 3, 5, 11)),
    ("1d", ms(2024, 3, 5, 23, 59), ms(2024, 3, 5), ms(2024, 3, 6)),
    ("7d", ms(2024, 3, 10, 23, 59), ms(2024, 3, 4), ms(2024, 3, 11)),    # Mon..Mon
    ("calendar-month", ms(2024, 2, 29, 12), ms(2024, 2, 1), ms(2024, 3, 1)),
    ("calendar-month", ms(2024, 12, 31, 23), ms(2024, 12, 1), ms(2025, 1, 1)),
    ("30d", ms(1970, 1, 30, 23), ms(1970, 1, 1), ms(1970, 1, 31)),
])
def test_period_bounds(period: str, now: int, start: int, end: int) -> None:
    assert period_bounds(period, now) == (start, end)


def test_lifetime_has_no_end() -> None:
    assert period_bounds("none", ms(2024, 1, 1)) == (0, None)
    with pytest.raises(ValueError):
        period_bounds("2w", 0)
