"""Limits and budgets as policy: a VirtualKey's rules turned into one atomic Store demand.

The app calls `Limiter.admit` before routing a request and `Limiter.settle` (from a task it
owns, also on client disconnect) with the real usage. This module converts USD to integer
micro-dollars and refusals to `RateLimited`; it never counts anything itself (the Store does,
atomically) and never prices a request (pricing.py does).

Budget periods are FIXED periods, not rolling windows (see `store.period_bounds`): 1h, 1d and
30d count from the Unix epoch, 7d from Monday 00:00 UTC, calendar-month from the 1st 00:00
UTC, `none` is the key's lifetime. Fixed periods let every replica and the operator agree on
"spend since <start>" from the clock alone, with one counter per key.

Overshoot bound: a request is admitted only if spent + in-flight reservations + its own
worst-case reservation <= limit, so settled spend exceeds the limit only by what requests
cost beyond their reservation: at most the sum over concurrently running requests of
max(0, real cost - reservation), which is 0 when reservations are true worst cases (from
max_tokens). Two exceptions widen it: a ticket whose lease expired before it settled (its
reservation was released, its real cost is still booked), and fail-open during a Redis outage
(each pod then enforces the budget on its own, up to one budget per pod).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from llmgate_contract.budget import key_scope
from llmgate_contract.config import VirtualKey

from llmgate_sidecar.errors import RateLimited
from llmgate_sidecar.policy.store import (
    Clock,
    Demand,
    MemoryStore,
    Refusal,
    Spend,
    Store,
    Ticket,
    micros_to_usd,
    usd_to_micros,
)

log = logging.getLogger("llmgate.limits")

UNLIMITED = "none"  # Ticket.origin of keys with no limit and no budget: no store round trip


class Limiter:
    """Applies VirtualKey limits/budgets through a Store; one per sidecar process.

    `lease` (seconds) is how long an admitted request may run before its slot and
    reservation are released anyway; keep it above the longest route deadline. `clock` is
    wall time, used to notice tickets settled after their lease ran out.
    """

    def __init__(self, store: Store, *, clock: Clock = time.time, lease: float = 900.0) -> None:
        self.store = store
        self._clock = clock
        self._lease_ms = int(lease * 1000)

    async def admit(self, policy: VirtualKey, *, namespace: str, estimated_tokens: int,
                    reserve_usd: Decimal) -> Ticket:
        """Admit one request or raise RateLimited(kind=requests|tokens|parallel|budget)."""
        if estimated_tokens < 0 or reserve_usd < 0:
            raise ValueError("estimated_tokens and reserve_usd must not be negative")
        limits, budget = policy.limits, policy.budget
        scope = key_scope(namespace, policy.name)
        if budget is None and limits.requests_per_minute is None and \
                limits.tokens_per_minute is None and limits.max_parallel is None:
            return Ticket(id="", scope=scope, origin=UNLIMITED, budgeted=False, period="none",
                          reserve_micros=0, tokens=estimated_tokens,
                          admitted_ms=int(self._clock() * 1000))
        demand = Demand(
            scope=scope,
            requests_per_minute=limits.requests_per_minute,
            tokens_per_minute=limits.tokens_per_minute,
            tokens=estimated_tokens,
            max_parallel=limits.max_parallel,
            budget_micros=None if budget is None else _limit_micros(budget.limit),
            period=budget.period if budget else "none",
            reserve_micros=usd_to_micros(reserve_usd, round_up=True) if budget else 0,
            lease_ms=self._lease_ms,
        )
        outcome = await self.store.admit(demand)
        if isinstance(outcome, Refusal):
            raise _rate_limited(outcome, policy, demand)
        return outcome

    async def top_up(self, policy: VirtualKey, *, namespace: str,
                     reserve_usd: Decimal) -> Ticket:
        """Hold one more worst case of a request already admitted (before it tries the
        upstream again after a try that may have been billed): the budget only, since the
        request already holds its slot and counts as one request. Raises RateLimited."""
        if policy.budget is None:
            return Ticket(id="", scope=key_scope(namespace, policy.name), origin=UNLIMITED,
                          budgeted=False, period="none", reserve_micros=0, tokens=0,
                          admitted_ms=int(self._clock() * 1000))
        demand = Demand(scope=key_scope(namespace, policy.name),
                        budget_micros=_limit_micros(policy.budget.limit),
                        period=policy.budget.period,
                        reserve_micros=usd_to_micros(reserve_usd, round_up=True),
                        lease_ms=self._lease_ms)
        outcome = await self.store.admit(demand)
        if isinstance(outcome, Refusal):
            raise _rate_limited(outcome, policy, demand)
        return outcome

    async def settle(self, ticket: Ticket, *, tokens: int, cost_usd: Decimal) -> None:
        """Book real usage; safe to call twice (the second call changes nothing)."""
        done = self.settle_soon(ticket, tokens=tokens, cost_usd=cost_usd)
        if done is not None:
            await done

    def settle_soon(self, ticket: Ticket, *, tokens: int,
                    cost_usd: Decimal) -> asyncio.Future[bool] | None:
        """`settle` without awaiting it: the store's future of it (None for a key without
        limits or budget: nothing to book)."""
        if ticket.origin == UNLIMITED:
            return None
        done = self.store.settle_soon(ticket, tokens=max(0, tokens),
                                      cost_micros=max(0, usd_to_micros(cost_usd)))
        if self._clock() * 1000 - ticket.admitted_ms > self._lease_ms:
            done.add_done_callback(lambda booked: self._warn_late(
                ticket, not booked.cancelled() and booked.exception() is None
                and booked.result()))
        return done

    @property
    def settles_now(self) -> bool:
        """Whether the store can settle without awaiting (the in-memory store can)."""
        return self.store.settles_in_place

    def settle_now(self, ticket: Ticket, *, tokens: int, cost_usd: Decimal) -> None:
        """`settle` for a store that `settles_now`: done before this returns, no task."""
        if ticket.origin == UNLIMITED:
            return
        late = self._clock() * 1000 - ticket.admitted_ms > self._lease_ms
        assert isinstance(self.store, MemoryStore)
        counted = self.store.settle_now(
            ticket, tokens=max(0, tokens), cost_micros=max(0, usd_to_micros(cost_usd)))
        self._warn_late(ticket, late and counted)

    def _warn_late(self, ticket: Ticket, late: bool) -> None:
        if late:
            log.warning("request on key %s outlived its %d s lease; its reservation was "
                        "released early (raise the lease above the route deadline)",
                        ticket.scope, self._lease_ms // 1000)

    async def spend(self, policy: VirtualKey, *, namespace: str) -> BudgetStatus:
        """The key's spend in its current budget period (lifetime if it has no budget)."""
        period = policy.budget.period if policy.budget else "none"
        raw = await self.store.spend(key_scope(namespace, policy.name), period)
        return BudgetStatus.of(raw, policy)


@dataclass(frozen=True)
class BudgetStatus:
    """Spend of one key for the operator's status and the app's headers, in USD.

    `period_start`/`period_end` are None for a lifetime budget (or no budget)."""

    spent: Decimal
    reserved: Decimal
    limit: Decimal | None
    period_start: datetime | None
    period_end: datetime | None

    @classmethod
    def of(cls, raw: Spend, policy: VirtualKey) -> BudgetStatus:
        start = None if raw.period_end_ms is None else _utc(raw.period_start_ms)
        end = None if raw.period_end_ms is None else _utc(raw.period_end_ms)
        return cls(micros_to_usd(raw.spent_micros), micros_to_usd(raw.reserved_micros),
                   policy.budget.limit if policy.budget else None, start, end)

    @property
    def exhausted(self) -> bool:
        return self.limit is not None and self.spent >= self.limit


@functools.lru_cache(maxsize=1024)
def _limit_micros(limit: Decimal) -> int:
    """A budget's limit in micro-dollars (the same few limits for every request)."""
    return usd_to_micros(limit)


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _rate_limited(refusal: Refusal, policy: VirtualKey, demand: Demand) -> RateLimited:
    retry = refusal.retry_after_ms / 1000
    key = policy.name
    code = None
    if refusal.kind == "parallel":
        message = f"Too many parallel requests for key '{key}' (limit {demand.max_parallel})."
    elif refusal.kind == "requests":
        message = (f"Rate limit reached for key '{key}': {demand.requests_per_minute} "
                   f"requests per minute.")
    elif refusal.kind == "tokens" and refusal.detail == "too-large":
        message = (f"This request needs about {demand.tokens} tokens, more than key '{key}' "
                   f"may use per minute ({demand.tokens_per_minute}).")
    elif refusal.kind == "tokens":
        message = (f"Rate limit reached for key '{key}': {demand.tokens_per_minute} tokens "
                   f"per minute.")
    else:
        message, code = _budget_message(refusal, policy, demand)
    return RateLimited(f"{message} Retry after {max(1, round(retry))} s.", retry_after=retry,
                       kind=refusal.kind, code=code)


def _budget_message(refusal: Refusal, policy: VirtualKey,
                    demand: Demand) -> tuple[str, str | None]:
    assert policy.budget is not None
    budget = f"${policy.budget.limit} per {policy.budget.period}"
    if policy.budget.period == "none":
        budget = f"${policy.budget.limit} (lifetime)"
    key = policy.name
    if refusal.detail == "in-flight":
        return (f"The budget of key '{key}' ({budget}) is held by requests in flight.",
                None)
    if refusal.detail == "too-large":
        worst = micros_to_usd(demand.reserve_micros)
        return (f"The worst-case cost of this request (${worst}) exceeds the budget of key "
                f"'{key}' ({budget}); lower max_tokens.", "budget_exceeded")
    return f"The budget of key '{key}' ({budget}) is exhausted.", "budget_exceeded"
