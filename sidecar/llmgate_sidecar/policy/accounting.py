"""Reserve before the call, settle after: the money side of one request.

`reservation` (pure) prices a request's worst case over every target the route might use;
`Accountant` admits it through the `Limiter` and settles the real cost from a task the app
owns, so a client that disconnects mid-stream still gets its usage booked. When usage is
unknown (a stream cut before its usage event) the reservation is booked: never less than
what may have been spent. Handlers call it; it never talks HTTP. Given the app's `Metrics`
it also records cost, remaining budget and store latency (nothing else).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Coroutine
from contextlib import AbstractContextManager
from dataclasses import dataclass
from decimal import Decimal
from types import TracebackType
from typing import Any

from llmgate_contract.config import Group, Route, Target, VirtualKey

from llmgate_sidecar.config.pricing import (
    cap_output,
    choices,
    measure_input,
    requested_output_tokens,
)
from llmgate_sidecar.config.runtime import Runtime
from llmgate_sidecar.errors import RateLimited
from llmgate_sidecar.observability import tracing
from llmgate_sidecar.observability.metrics import Metrics
from llmgate_sidecar.policy.limits import UNLIMITED, Limiter
from llmgate_sidecar.policy.store import Ticket
from llmgate_sidecar.upstream.providers.base import Usage

log = logging.getLogger("llmgate.accounting")

# Seconds between two reads of a key's remaining budget for its gauge.
REMAINING_INTERVAL = 0.5
# A key with fewer than this many reservations (like the request's own) left of its budget
# settles before the answer's end is sent: a sequential client must not be refused because
# its previous request still holds a reservation (docs/limits.md, "Money").
NEAR_LIMIT = 4
# Worst-case output when neither the client nor the target's params bound it.
DEFAULT_MAX_OUTPUT_TOKENS = 4096


@dataclass(frozen=True, slots=True)
class Reservation:
    input_tokens: int
    output_tokens: int
    usd: Decimal


FREE = Reservation(0, 0, Decimal(0))
"""What a cache hit reserves: it counts as a request, but costs nothing."""


def reservation(runtime: Runtime, route: Route, group: Group, body: dict[str, Any], *,
                ceilings: bool = True) -> Reservation:
    """Tokens and the highest worst-case cost over the targets `group` may try.

    The input side is `measure_input`'s bound (at each target's model: image formulas
    differ), the output side the most the body lets a target generate once its ceiling is
    applied (`cap_output`: whichever field the provider honours), times `n`. `ceilings`:
    False for endpoints that send the body as it came (pass-through), where a target's
    `params` do not bound the output."""
    size = measure_input(body)
    asked = requested_output_tokens(body)
    worst_usd, worst_out = Decimal(0), 0
    for price, ceiling in runtime.price_plan(group):
        if ceilings and ceiling is not None:
            output = requested_output_tokens(cap_output(body, ceiling)) or ceiling
        else:
            output = asked if asked is not None else DEFAULT_MAX_OUTPUT_TOKENS * choices(body)
        cost = price.worst_case(size.bound(price.matched or price.model), output)
        worst_usd, worst_out = max(worst_usd, cost), max(worst_out, output)
    return Reservation(size.estimate, worst_out, worst_usd)


def usage_cost(runtime: Runtime, target: Target, usage: Usage) -> Decimal:
    return runtime.price(target).cost(usage)


class Accountant:
    """Admission and settlement for one app; settlement tasks are awaited on shutdown.

    With `metrics`, store calls are timed (and spanned when tracing), booked cost is
    counted and a budgeted key's remaining USD is read back after each settlement."""

    def __init__(self, limiter: Limiter, *,
                 remaining_interval: float = REMAINING_INTERVAL) -> None:
        self.limiter = limiter
        self._tasks: set[asyncio.Task[None]] = set()
        self._remaining_interval = remaining_interval
        # Per key: when its remaining budget was last read, and whether a read is queued.
        self._remaining_read: dict[tuple[str, str], float] = {}
        self._remaining_queued: set[tuple[str, str]] = set()
        self._watched_by: Metrics | None = None  # the Metrics told about the store
        self._settling: set[asyncio.Future[bool]] = set()  # queued in the store
        self._closing = False

    async def admit(self, runtime: Runtime, policy: VirtualKey, planned: Reservation,
                    metrics: Metrics | None = None) -> Ticket:
        if metrics is None:
            return await self._admit(runtime, policy, planned)
        if metrics is not self._watched_by:
            metrics.watch_store(self.limiter.store)
            self._watched_by = metrics
        with self._timed(metrics, "admit"):
            return await self._admit(runtime, policy, planned)

    async def top_up(self, runtime: Runtime, policy: VirtualKey, planned: Reservation,
                     metrics: Metrics) -> Ticket:
        """Another worst case for a retry after a try that may have been billed."""
        with self._timed(metrics, "admit"):
            return await self.limiter.top_up(policy, namespace=runtime.namespace,
                                             reserve_usd=planned.usd)

    async def _admit(self, runtime: Runtime, policy: VirtualKey,
                     planned: Reservation) -> Ticket:
        return await self.limiter.admit(
            policy, namespace=runtime.namespace,
            estimated_tokens=planned.input_tokens + planned.output_tokens,
            reserve_usd=planned.usd)

    def settle_later(self, ticket: Ticket, planned: Reservation, runtime: Runtime,
                     target: Target | None, usage: Usage | None, *,
                     metrics: Metrics | None = None, route: str = "",
                     policy: VirtualKey | None = None, abandoned: bool = False,
                     unknown_tries: int = 0) -> Decimal:
        """Book the request's real cost in the background (survives the client leaving);
        returns the cost booked. `abandoned`: the client left while an upstream call was
        under way, so what it cost is unknown and the reservation is booked.
        `unknown_tries`: failed tries the upstream may have billed (a timeout after sending),
        each booked at the reservation on top."""
        tokens, cost, observe = self._booking(ticket, planned, runtime, target, usage, metrics,
                                              route, policy, abandoned, unknown_tries)
        if self.limiter.settles_now:
            # In memory nothing awaits: settle here rather than from a task per request.
            self._settle_now(ticket, tokens, cost, observe)
        elif tracing.enabled():
            # From a task, so that its span (a child of the request's) covers the wait.
            self._spawn(self._settle(ticket, tokens, cost, observe))
        else:
            self._settle_soon(ticket, tokens, cost, observe)
        return cost

    async def settle_before_end(self, ticket: Ticket, planned: Reservation, runtime: Runtime,
                                target: Target | None, usage: Usage | None, *,
                                metrics: Metrics | None = None, route: str = "",
                                policy: VirtualKey | None = None,
                                unknown_tries: int = 0) -> Decimal:
        """`settle_later`, awaited: for a key near its limit, booked before the client gets
        the end of its answer, so its next request (on any replica) sees the real cost."""
        tokens, cost, observe = self._booking(ticket, planned, runtime, target, usage, metrics,
                                              route, policy, False, unknown_tries)
        if self.limiter.settles_now:
            self._settle_now(ticket, tokens, cost, observe)
        else:
            await self._settle(ticket, tokens, cost, observe)
        return cost

    @staticmethod
    def near_limit(ticket: Ticket) -> bool:
        """Whether `ticket`'s key has less than `NEAR_LIMIT` reservations like this one left
        (then settlement runs before the answer ends; elsewhere in the background)."""
        return ticket.budgeted and ticket.remaining_micros is not None and \
            ticket.remaining_micros < NEAR_LIMIT * max(1, ticket.reserve_micros)

    def _booking(self, ticket: Ticket, planned: Reservation, runtime: Runtime,
                 target: Target | None, usage: Usage | None, metrics: Metrics | None,
                 route: str, policy: VirtualKey | None, abandoned: bool, unknown_tries: int,
                 ) -> tuple[int, Decimal, tuple[Metrics, VirtualKey, str] | None]:
        """Tokens and cost to book for one request, and what to observe it with."""
        if usage is not None and usage.known and target is not None:
            tokens = usage.prompt_tokens + usage.completion_tokens
            cost = usage_cost(runtime, target, usage)
        elif target is None and not abandoned:
            tokens, cost = 0, Decimal(0)  # no upstream answered: nothing was spent
        else:
            tokens, cost = planned.input_tokens + planned.output_tokens, planned.usd
        if unknown_tries:
            tokens += unknown_tries * (planned.input_tokens + planned.output_tokens)
            cost += unknown_tries * planned.usd
        observe = None
        if metrics is not None and policy is not None:
            if target is not None:
                metrics.cost.labels(route, target.provider, target.model,
                                    policy.name).inc(float(cost))
            if ticket.origin != UNLIMITED:
                observe = (metrics, policy, runtime.namespace)
            if ticket.budgeted:
                drift = planned.usd * (1 + unknown_tries) - cost
                if drift >= 0:
                    metrics.over_reserved.labels(policy.name).inc(float(drift))
                else:
                    metrics.under_reserved.labels(policy.name).inc(float(-drift))
        return tokens, cost, observe

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work, name="llmgate-settle")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _settle_now(self, ticket: Ticket, tokens: int, cost: Decimal,
                    observe: tuple[Metrics, VirtualKey, str] | None) -> None:
        try:
            if observe is None:
                self.limiter.settle_now(ticket, tokens=tokens, cost_usd=cost)
                return
            metrics, policy, namespace = observe
            with self._timed(metrics, "settle"):
                self.limiter.settle_now(ticket, tokens=tokens, cost_usd=cost)
        except Exception:
            log.exception("settling usage failed", extra={"scope": ticket.scope})
            if observe is not None:
                observe[0].unbooked.labels(observe[1].name).inc(float(cost))
            return
        if policy.budget is not None and (namespace, policy.name) not in self._remaining_queued:
            self._spawn(self._publish_remaining_soon(metrics, policy, namespace))

    def _settle_soon(self, ticket: Ticket, tokens: int, cost: Decimal,
                     observe: tuple[Metrics, VirtualKey, str] | None) -> None:
        """Queue it in the store (Redis books it with its next call): no task per request;
        `_settled` observes the outcome."""
        timer = None
        if observe is not None:
            timer = self._timed(observe[0], "settle")
            timer.__enter__()  # tracing is off on this path: only the clock starts
        try:
            done = self.limiter.settle_soon(ticket, tokens=tokens, cost_usd=cost)
        except Exception as exc:
            self._settled(ticket, cost, observe, timer, exc)
            return
        if done is not None:
            self._settling.add(done)
            done.add_done_callback(functools.partial(self._booked, ticket, cost, observe,
                                                     timer))

    def _booked(self, ticket: Ticket, cost: Decimal,
                observe: tuple[Metrics, VirtualKey, str] | None, timer: _Timed | None,
                done: asyncio.Future[bool]) -> None:
        self._settling.discard(done)
        error = asyncio.CancelledError() if done.cancelled() else done.exception()
        self._settled(ticket, cost, observe, timer, error)

    def _settled(self, ticket: Ticket, cost: Decimal,
                 observe: tuple[Metrics, VirtualKey, str] | None, timer: _Timed | None,
                 error: BaseException | None) -> None:
        if timer is not None:
            timer.__exit__(None if error is None else type(error), error, None)
        if error is not None:
            log.error("settling usage failed", exc_info=error, extra={"scope": ticket.scope})
            if observe is not None:
                observe[0].unbooked.labels(observe[1].name).inc(float(cost))
            return
        if observe is None or self._closing:
            return
        metrics, policy, namespace = observe
        if policy.budget is not None and (namespace, policy.name) not in self._remaining_queued:
            self._spawn(self._publish_remaining_soon(metrics, policy, namespace))

    async def _settle(self, ticket: Ticket, tokens: int, cost: Decimal,
                      observe: tuple[Metrics, VirtualKey, str] | None = None) -> None:
        try:
            if observe is None:
                await self.limiter.settle(ticket, tokens=tokens, cost_usd=cost)
                return
            metrics, policy, namespace = observe
            with self._timed(metrics, "settle"):
                await self.limiter.settle(ticket, tokens=tokens, cost_usd=cost)
        except Exception:
            # The store's lease releases the reservation eventually; say that it happened.
            log.exception("settling usage failed", extra={"scope": ticket.scope})
            if observe is not None:
                observe[0].unbooked.labels(observe[1].name).inc(float(cost))
            return
        if policy.budget is not None:
            await self._publish_remaining_soon(metrics, policy, namespace)

    async def _publish_remaining_soon(self, metrics: Metrics, policy: VirtualKey,
                                      namespace: str) -> None:
        """Read the key's spend back at most once per interval: a busy key would otherwise
        cost one extra store round trip per request. The last settlement of a burst is
        always followed by a read, so the gauge ends exact."""
        key = (namespace, policy.name)
        if key in self._remaining_queued:
            return
        wait = self._remaining_read.get(key, -1e9) + self._remaining_interval \
            - time.monotonic()
        if wait > 0:
            self._remaining_queued.add(key)
            try:
                await asyncio.sleep(wait)
            finally:
                self._remaining_queued.discard(key)
        self._remaining_read[key] = time.monotonic()
        await self._publish_remaining(metrics, policy, namespace)

    async def _publish_remaining(self, metrics: Metrics, policy: VirtualKey,
                                 namespace: str) -> None:
        assert policy.budget is not None
        try:
            with self._timed(metrics, "spend"):
                status = await self.limiter.spend(policy, namespace=namespace)
        except Exception:
            return  # store down: counted by _timed; the gauge keeps its last value
        remaining = max(Decimal(0), policy.budget.limit - status.spent)
        metrics.budget_remaining.labels(policy.name).set(float(remaining))

    def _timed(self, metrics: Metrics, operation: str) -> _Timed:
        """Time (and trace) one store call; errors are counted, then propagate."""
        return _Timed(metrics, operation, self.limiter.store.origin)

    @property
    def busy(self) -> int:
        """Settlements not yet booked (or queued for a replay) and gauge reads under way."""
        return len(self._tasks) + len(self._settling)

    async def drain(self) -> None:
        self._closing = True  # no more gauge reads
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._settling:
            await asyncio.gather(*list(self._settling), return_exceptions=True)
        await self.limiter.store.aclose()


class _Timed:
    """`Accountant._timed`: a plain context manager (twice per request, so no generator)."""

    __slots__ = ("metrics", "operation", "span", "started", "store")

    def __init__(self, metrics: Metrics, operation: str, store: str) -> None:
        self.metrics, self.operation, self.store = metrics, operation, store
        self.span: AbstractContextManager[Any] | None = None
        self.started = 0.0

    def __enter__(self) -> None:
        if tracing.enabled():
            self.span = tracing.span(f"llmgate.store {self.operation}", {
                "db.system.name": self.store, "db.operation.name": self.operation})
            self.span.__enter__()
        self.started = time.perf_counter()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool | None:
        # a refusal (RateLimited) is the store working, not an error
        if kind is not None and issubclass(kind, Exception) and \
                not issubclass(kind, RateLimited):
            self.metrics.store_errors.labels(self.operation, self.store).inc()
        self.metrics.store_duration.labels(self.operation, self.store).observe(
            time.perf_counter() - self.started)
        return None if self.span is None else self.span.__exit__(kind, exc, tb)
