"""The limits-and-budgets store: a narrow Protocol of ATOMIC operations, and MemoryStore.

`Limiter` (limits.py) is the only caller; `RedisStore` (redis_store.py) implements the same
Protocol across replicas with Lua. Each check-and-consume is ONE call here (`admit`), never a
read followed by a write. Money is integer micro-dollars; time is integer milliseconds.
This module knows nothing about VirtualKey policies, prices or HTTP.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

# Shared with the operator's spend poller; re-exported (`as`) for the sidecar's modules.
from llmgate_contract.budget import micros_to_usd as micros_to_usd
from llmgate_contract.budget import period_bounds as period_bounds
from llmgate_contract.budget import usd_to_micros as usd_to_micros

Clock = Callable[[], float]
"""Wall-clock seconds since the Unix epoch (time.time); injectable for tests."""

Kind = Literal["requests", "tokens", "parallel", "budget"]

# Rate limits are sliding windows of WINDOW_S one-second buckets: a unit consumed in second b
# is forgotten when second b+WINDOW_S starts, so any 59 s span holds at most the limit and a
# fixed-window double burst at a boundary cannot happen. Memory is O(WINDOW_S) per key.
WINDOW_S = 60
# How long an expired-lease ticket is remembered, so a late settle still books its cost.
TOMB_MS = 86_400_000
# How long a settled ticket is remembered, so a replayed settlement (Redis failed after it
# ran the first one) books nothing twice. A ticket the store does not know at all (lost
# with a Redis restart or failover, or settled longer ago than this) still books its cost:
# the money was spent; at worst a replay this late books it twice (over, never under).
# (MemoryStore needs no mark for a ticket it issued and settled from its lease: it knows
# such a ticket for TOMB_MS; see `MemoryStore._settled_before`.)
SETTLED_MS = 120_000
# Reservations refused only because in-flight requests hold the budget (or every parallel
# slot is busy) free up when those requests settle: ask the client to retry soon.
IN_FLIGHT_RETRY_MS = 1_000
# A lifetime budget never resets; Retry-After must still say something.
LIFETIME_RETRY_MS = 86_400_000
@dataclass(frozen=True, slots=True)
class Demand:
    """One request's claim on a key, checked and consumed atomically by `Store.admit`.

    Limits that are None are not enforced. `tokens` is the estimate counted against
    tokens/min until settle corrects it; `reserve_micros` is held against the budget of the
    current `period` until settle replaces it with the real cost. `lease_ms` bounds how long
    a ticket that is never settled (sidecar killed) keeps its slot and reservation.
    """

    scope: str
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    tokens: int = 0
    max_parallel: int | None = None
    budget_micros: int | None = None
    period: str = "none"
    reserve_micros: int = 0
    lease_ms: int = 900_000


@dataclass(frozen=True, slots=True)
class Ticket:
    """Proof of admission; settle it exactly once (settling again is a no-op)."""

    id: str
    scope: str
    origin: str  # which store holds it: "memory" or "redis"
    budgeted: bool
    period: str
    reserve_micros: int
    tokens: int
    admitted_ms: int
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    remaining_micros: int | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a demand was refused; `retry_after_ms` is when the same demand could pass.

    `detail` is "rate" (window full), "too-large" (the demand alone exceeds the limit),
    "in-flight" (slots/budget held by running requests) or "exhausted" (budget spent).
    """

    kind: Kind
    retry_after_ms: int
    detail: str


@dataclass(frozen=True, slots=True)
class Spend:
    spent_micros: int
    reserved_micros: int
    period_start_ms: int
    period_end_ms: int | None


class Store(Protocol):
    """Atomic limit/budget operations shared by all replicas of a pod template."""

    @property
    def origin(self) -> str:
        """Which store this is ("memory", "redis"): metric labels and `Ticket.origin`."""

    @property
    def settles_in_place(self) -> bool:
        """True when `settle` does no I/O, so the caller may book it before it returns
        (`MemoryStore.settle_now`) instead of from a task; False for a store to await."""

    async def admit(self, demand: Demand) -> Ticket | Refusal:
        """Check every limit of `demand` and, only if all pass, consume them all at once."""
        ...

    async def settle(self, ticket: Ticket, *, tokens: int, cost_micros: int) -> bool:
        """Book real tokens and cost, release slot and reservation; False if already done.
        A ticket the store does not know (its state was lost) still books its cost."""
        ...

    def settle_soon(self, ticket: Ticket, *, tokens: int,
                    cost_micros: int) -> asyncio.Future[bool]:
        """`settle` without awaiting it (the app's settlements in the background): its
        outcome, once booked. A store that batches (Redis) queues it for its next call."""
        ...

    async def spend(self, scope: str, period: str) -> Spend:
        """Settled spend and outstanding reservations of `scope` in its current period."""
        ...

    async def ready(self) -> bool:
        """Can requests be admitted now? (False only when a failure would refuse them.)"""
        ...

    async def aclose(self) -> None: ...


def window_check(buckets: dict[int, int], now_ms: int, limit: int,
                 cost: int) -> tuple[int, int]:
    """Prune `buckets` (second -> amount) and return (used, retry_ms).

    retry_ms is 0 if `cost` fits now, -1 if it can never fit (cost > limit), else the ms
    until enough old buckets leave the window. Mirrors `window` in the Lua scripts.
    """
    cur = now_ms // 1000
    for stale in [b for b in buckets if b <= cur - WINDOW_S]:
        del buckets[stale]
    used = sum(buckets.values())
    if cost > limit:
        return used, -1
    if used + cost <= limit:
        return used, 0
    freed = 0
    for second in sorted(buckets):
        freed += buckets[second]
        if used - freed + cost <= limit:
            return used, (second + WINDOW_S) * 1000 - now_ms
    return used, WINDOW_S * 1000


@dataclass
class _Lease:
    deadline_ms: int
    reserve: int
    bucket: int
    est: int  # -1: tokens/min was not counted for this ticket


_UNKNOWN = _Lease(0, 0, 0, -1)  # a ticket settled with no lease or tomb here


@dataclass
class _Budget:
    period: str
    start: int
    spent: int = 0
    reserved: int = 0


@dataclass
class _Scope:
    requests: dict[int, int] = field(default_factory=dict)
    tokens: dict[int, int] = field(default_factory=dict)
    leases: dict[str, _Lease] = field(default_factory=dict)
    tombs: dict[str, _Lease] = field(default_factory=dict)  # expired leases, until settled
    # Settled marks, only for tickets settled from a tomb or unknown (rare): a ticket this
    # store settled from its lease needs none (see `MemoryStore._settled_before`).
    marks: dict[str, int] = field(default_factory=dict)
    budget: _Budget | None = None
    next_check_ms: int = 0

    def purge(self, now: int) -> None:
        """Release leases past their deadline (keeping a tomb) and forget old tombs."""
        if now < self.next_check_ms:
            return
        for tid in [t for t, lease in self.leases.items() if lease.deadline_ms <= now]:
            lease = self.leases.pop(tid)
            if lease.reserve and self.budget:
                self.budget.reserved = max(0, self.budget.reserved - lease.reserve)
            self.tombs[tid] = _Lease(now + TOMB_MS, 0, lease.bucket, lease.est)
        for tid in [t for t, tomb in self.tombs.items() if tomb.deadline_ms <= now]:
            del self.tombs[tid]
        for tid in [t for t, deadline in self.marks.items() if deadline <= now]:
            del self.marks[tid]
        deadlines = [x.deadline_ms for x in (*self.leases.values(), *self.tombs.values())]
        deadlines += self.marks.values()
        self.next_check_ms = min(deadlines, default=now + TOMB_MS)

    def current_budget(self, period: str, now: int) -> _Budget:
        """This period's counter; a new period starts at 0 spent, reservations carry over."""
        start, _ = period_bounds(period, now)
        held = self.budget.reserved if self.budget else 0
        if self.budget is None or self.budget.period != period or self.budget.start != start:
            self.budget = _Budget(period, start, 0, held)
        return self.budget

    def idle(self, now: int) -> bool:
        cur = now // 1000
        if self.leases or self.tombs or self.marks:
            return False
        if any(b > cur - WINDOW_S for b in (*self.requests, *self.tokens)):
            return False
        if self.budget is None:
            return True
        start, end = period_bounds(self.budget.period, now)
        return end is not None and self.budget.start != start  # its period is over


class MemoryStore:
    """The Store in one process: local mode, pods without Redis, and RedisStore's fail-open.

    asyncio-safe because no method awaits between its check and its consume; not
    thread-safe. Memory stays bounded: windows keep WINDOW_S buckets, tickets end by settle or
    lease, tombs after TOMB_MS, and idle keys are swept about once a minute.
    """

    origin = "memory"
    settles_in_place = True  # `settle` is `settle_now`: no I/O

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "settle" in vars(cls):  # an override of `settle` must run: await it
            cls.settles_in_place = False

    def __init__(self, *, clock: Clock = time.time) -> None:
        self._clock = clock
        self._scopes: dict[str, _Scope] = {}
        self._next_sweep_ms = 0
        # Ticket ids: unique within this store (a random prefix per store, then a count).
        self._id_prefix = secrets.token_hex(6) + "-"
        self._ids = itertools.count()

    def _now(self) -> int:
        return int(self._clock() * 1000)

    def _scope(self, name: str, now: int) -> _Scope:
        if now >= self._next_sweep_ms:
            self._next_sweep_ms = now + WINDOW_S * 1000
            idle = []
            for key, state in self._scopes.items():
                state.purge(now)
                if state.idle(now):
                    idle.append(key)
            for key in idle:
                del self._scopes[key]
        scope = self._scopes.get(name)
        if scope is None:
            scope = self._scopes[name] = _Scope()
        scope.purge(now)
        return scope

    @property
    def scopes(self) -> int:
        """How many keys hold state (for tests and the memory bound)."""
        return len(self._scopes)

    async def admit(self, demand: Demand) -> Ticket | Refusal:
        return self.admit_now(demand)

    def admit_now(self, demand: Demand) -> Ticket | Refusal:
        """`admit` without the coroutine: the whole check-and-consume, with no await."""
        now = self._now()
        scope = self._scope(demand.scope, now)
        refusals: list[Refusal] = []
        if demand.max_parallel is not None and len(scope.leases) >= demand.max_parallel:
            refusals.append(Refusal("parallel", IN_FLIGHT_RETRY_MS, "in-flight"))
        used_r = used_t = 0
        if demand.requests_per_minute is not None:
            used_r, retry = window_check(scope.requests, now, demand.requests_per_minute, 1)
            _refuse_window(refusals, "requests", retry)
        if demand.tokens_per_minute is not None:
            used_t, retry = window_check(scope.tokens, now, demand.tokens_per_minute,
                                         demand.tokens)
            _refuse_window(refusals, "tokens", retry)
        budget = None
        if demand.budget_micros is not None:
            budget = scope.current_budget(demand.period, now)
            refusal = _budget_refusal(demand, budget.spent, budget.reserved, now)
            if refusal:
                refusals.append(refusal)
        if refusals:
            return max(refusals, key=lambda r: r.retry_after_ms)
        return self._consume(demand, scope, budget, now, used_r, used_t)

    def _consume(self, demand: Demand, scope: _Scope, budget: _Budget | None, now: int,
                 used_r: int, used_t: int) -> Ticket:
        bucket = now // 1000
        if demand.requests_per_minute is not None:
            scope.requests[bucket] = scope.requests.get(bucket, 0) + 1
        counted = demand.tokens_per_minute is not None
        if counted:
            scope.tokens[bucket] = scope.tokens.get(bucket, 0) + demand.tokens
        reserve = demand.reserve_micros if budget else 0
        if budget:
            budget.reserved += reserve
        tid = f"{self._id_prefix}{next(self._ids)}"
        deadline = now + demand.lease_ms
        scope.leases[tid] = _Lease(deadline, reserve, bucket, demand.tokens if counted else -1)
        if deadline < scope.next_check_ms:
            scope.next_check_ms = deadline
        return Ticket(
            id=tid, scope=demand.scope, origin=self.origin, budgeted=budget is not None,
            period=demand.period, reserve_micros=reserve, tokens=demand.tokens,
            admitted_ms=now,
            remaining_requests=None if demand.requests_per_minute is None
            else demand.requests_per_minute - used_r - 1,
            remaining_tokens=None if demand.tokens_per_minute is None
            else demand.tokens_per_minute - used_t - demand.tokens,
            remaining_micros=None if budget is None or demand.budget_micros is None
            else demand.budget_micros - budget.spent - budget.reserved,
        )

    async def settle(self, ticket: Ticket, *, tokens: int, cost_micros: int) -> bool:
        return self.settle_now(ticket, tokens=tokens, cost_micros=cost_micros)

    def settle_soon(self, ticket: Ticket, *, tokens: int,
                    cost_micros: int) -> asyncio.Future[bool]:
        """`settle` from a task (callers that can use `settle_now` do: no task at all)."""
        return asyncio.ensure_future(self.settle(ticket, tokens=tokens,
                                                 cost_micros=cost_micros))

    def settle_now(self, ticket: Ticket, *, tokens: int, cost_micros: int) -> bool:
        """`settle` without the coroutine (and so without a task per request)."""
        now = self._now()
        scope = self._scope(ticket.scope, now)
        lease = scope.leases.pop(ticket.id, None)
        if lease is not None:
            if lease.reserve and scope.budget:
                scope.budget.reserved = max(0, scope.budget.reserved - lease.reserve)
        else:
            lease = scope.tombs.pop(ticket.id, None)
            if lease is None:
                if ticket.id in scope.marks or self._settled_before(ticket, now):
                    return False
                lease = _UNKNOWN  # unknown here: book the cost, correct no tokens
            scope.marks[ticket.id] = now + SETTLED_MS
            scope.next_check_ms = min(scope.next_check_ms, now + SETTLED_MS)
        if ticket.budgeted:
            scope.current_budget(ticket.period, now).spent += cost_micros
        if lease.est >= 0:
            _correct_tokens(scope.tokens, lease.bucket, tokens - lease.est, now)
        return True

    def _settled_before(self, ticket: Ticket, now: int) -> bool:
        """Whether `ticket`, found neither open nor in a tomb, was settled here already.

        True for a ticket this store issued less than TOMB_MS ago: its lease left only by a
        settle or by expiring into a tomb, and a tomb lives TOMB_MS past the lease, so it
        cannot be gone yet. So settling from a lease leaves nothing behind (no mark per
        request: at 2,000 req/s two minutes of marks were 240,000 entries, scanned on every
        expiry). Older, or another store's: unknown, so its cost is booked."""
        return ticket.id.startswith(self._id_prefix) and now - ticket.admitted_ms < TOMB_MS

    @property
    def held(self) -> int:
        """Per-ticket entries kept (leases, tombs, marks): for tests and the memory bound."""
        return sum(len(s.leases) + len(s.tombs) + len(s.marks) for s in self._scopes.values())

    async def record(self, scope: str, period: str, cost_micros: int) -> None:
        """Book cost with no ticket (replaying spend made elsewhere)."""
        now = self._now()
        self._scope(scope, now).current_budget(period, now).spent += cost_micros

    async def spend(self, scope: str, period: str) -> Spend:
        now = self._now()
        start, end = period_bounds(period, now)
        state = self._scopes.get(scope)
        if state is None:
            return Spend(0, 0, start, end)
        state.purge(now)
        budget = state.budget
        reserved = budget.reserved if budget else 0
        if budget is None or budget.period != period or budget.start != start:
            return Spend(0, reserved, start, end)
        return Spend(budget.spent, reserved, start, end)

    async def ready(self) -> bool:
        return True

    async def aclose(self) -> None:
        self._scopes.clear()


def _refuse_window(refusals: list[Refusal], kind: Kind, retry_ms: int) -> None:
    if retry_ms < 0:
        refusals.append(Refusal(kind, WINDOW_S * 1000, "too-large"))
    elif retry_ms > 0:
        refusals.append(Refusal(kind, retry_ms, "rate"))


def _budget_refusal(demand: Demand, spent: int, reserved: int, now: int) -> Refusal | None:
    """An exhausted budget (spent >= limit) refuses even a zero reservation."""
    limit, reserve = demand.budget_micros or 0, demand.reserve_micros
    if spent < limit and spent + reserved + reserve <= limit:
        return None
    if spent < limit and spent + reserve <= limit:
        return Refusal("budget", IN_FLIGHT_RETRY_MS, "in-flight")
    end = period_bounds(demand.period, now)[1]
    retry = LIFETIME_RETRY_MS if end is None else end - now
    detail = "too-large" if spent < limit and reserve > limit else "exhausted"
    return Refusal("budget", retry, detail)


def _correct_tokens(buckets: dict[int, int], bucket: int, delta: int, now: int) -> None:
    """Replace the estimate by the real count: in its own bucket while that is in the window,
    else (only if more were used than estimated) in the current one."""
    cur = now // 1000
    if bucket > cur - WINDOW_S:
        buckets[bucket] = max(0, buckets.get(bucket, 0) + delta)
    elif delta > 0:
        buckets[cur] = buckets.get(cur, 0) + delta
