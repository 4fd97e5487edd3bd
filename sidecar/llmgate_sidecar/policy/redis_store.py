"""RedisStore: the Store shared by every replica, one Lua script per admit and per settle.

Created by the sidecar's app factory when a Redis URL is set; called only through `Limiter`.
Scripts are registered once and run by EVALSHA (one round trip); time comes from Redis
(`TIME`) so replicas agree; every key of a virtual key shares the hash tag
`llmgate:{<namespace>/<key>}:` (layout in llmgate_contract.budget, which the operator
reads spend with) so Redis Cluster keeps them in one slot; every key has a TTL;
money is integer micro-dollars. On Redis errors, failOpen degrades to an internal MemoryStore
(counted, logged once per interval) and failClosed raises Unavailable. No policy lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from llmgate_contract.budget import keys_for as keys_for
from llmgate_contract.redis_client import RedisClient, connect
from redis.exceptions import RedisError

from llmgate_sidecar.errors import Unavailable
from llmgate_sidecar.policy.redis_scripts import ADMIT_LUA, SETTLE_LUA, SPEND_LUA
from llmgate_sidecar.policy.store import (
    Clock,
    Demand,
    Kind,
    MemoryStore,
    Refusal,
    Spend,
    Ticket,
)

READY_PING_TIMEOUT = 1.0

log = logging.getLogger("llmgate.store")


@dataclass(frozen=True)
class StoreHealth:
    """For /metrics and /readyz: whether limits are shared right now, and what it cost."""

    degraded: bool
    fallbacks: int  # admits served by the local MemoryStore because Redis failed
    errors: int  # Redis calls that failed
    pending: int  # settlements waiting for Redis to come back
    orphaned: int = 0  # settlements booked for tickets Redis had lost (restart, failover)
    dropped_micros: int = 0  # cost of queued settlements dropped because the queue was full


_Pending = tuple[Ticket, int, int]  # (ticket, tokens, cost_micros) not yet booked in Redis


class RedisStore:
    """The Store in Redis, atomic across replicas; see the module docstring for fail modes.

    `clock` is for tests only: when given, scripts take time from it instead of Redis TIME.
    After a Redis error, admits go straight to the local store for `retry_interval` seconds
    before Redis is tried again (so an outage does not add a timeout to every request).
    Settlements that cannot reach Redis are queued (up to `max_pending`; beyond, the oldest
    is dropped and its cost counted in `health.dropped_micros`) and replayed, in order and
    idempotently, by a background task every `retry_interval` until Redis answers (and on
    the first call that succeeds); so is the spend of tickets admitted locally during the
    outage. A settlement whose ticket Redis no longer knows still books its cost.
    """

    origin = "redis"
    settles_in_place = False  # a Redis round trip: settled from a task

    def __init__(self, client: RedisClient, *, fail_mode: str = "failOpen",
                 clock: Clock | None = None, retry_interval: float = 1.0,
                 log_interval: float = 60.0, max_pending: int = 10_000,
                 monotonic: Callable[[], float] = time.monotonic,
                 owns_client: bool = False) -> None:
        if fail_mode not in ("failOpen", "failClosed"):
            raise ValueError(f"fail_mode must be failOpen or failClosed, not {fail_mode!r}")
        self._redis = client
        self._owns_client = owns_client
        self.fail_mode = fail_mode
        self._clock = clock
        self._local = MemoryStore(clock=clock or time.time)
        self._admit = client.register_script(ADMIT_LUA)
        self._settle = client.register_script(SETTLE_LUA)
        self._spend = client.register_script(SPEND_LUA)
        self._retry_interval = retry_interval
        self._log_interval = log_interval
        self._monotonic = monotonic
        self._pending: deque[_Pending] = deque()
        self._max_pending = max_pending
        self._replayer: asyncio.Task[None] | None = None
        self._replaying = asyncio.Lock()
        self._orphaned = self._dropped_micros = 0
        self._degraded = False
        self._retry_at = 0.0
        self._next_log = 0.0
        self._fallbacks = self._errors = self._fallbacks_logged = 0

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 1.0, max_connections: int = 64,
                 password: str | None = None, **kwargs: Any) -> RedisStore:
        """A store owning its client (any topology `connect` knows); `timeout` bounds
        connect, each command and the wait for a pooled connection (seconds)."""
        client = connect(url, decode_responses=True, timeout=timeout,
                         max_connections=max_connections, password=password)
        return cls(client, owns_client=True, **kwargs)

    @property
    def client(self) -> RedisClient:
        return self._redis

    @property
    def health(self) -> StoreHealth:
        return StoreHealth(self._degraded, self._fallbacks, self._errors, len(self._pending),
                           self._orphaned, self._dropped_micros)

    def _now_arg(self) -> str:
        return "-1" if self._clock is None else str(int(self._clock() * 1000))

    async def admit(self, demand: Demand) -> Ticket | Refusal:
        if self._degraded and self._monotonic() < self._retry_at:
            return self._fallback(demand)
        tid = secrets.token_hex(12)
        args: list[str | int] = [self._now_arg(), tid, _opt(demand.requests_per_minute),
                _opt(demand.tokens_per_minute), demand.tokens, _opt(demand.max_parallel),
                _opt(demand.budget_micros), demand.period, demand.reserve_micros,
                demand.lease_ms]
        try:
            raw = cast(list[Any], await self._admit(keys=keys_for(demand.scope), args=args))
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return self._fallback(demand)
        await self._recovered()
        if raw[0] == 0:
            return Refusal(cast(Kind, raw[1]), int(raw[2]), str(raw[3]))
        budgeted = demand.budget_micros is not None
        return Ticket(
            id=tid, scope=demand.scope, origin=self.origin, budgeted=budgeted,
            period=demand.period, reserve_micros=demand.reserve_micros if budgeted else 0,
            tokens=demand.tokens, admitted_ms=int(raw[1]),
            remaining_requests=_unopt(raw[2]), remaining_tokens=_unopt(raw[3]),
            remaining_micros=_unopt(raw[4]),
        )

    def _fallback(self, demand: Demand) -> Ticket | Refusal:
        if self.fail_mode == "failClosed":
            raise Unavailable("The shared limit store (Redis) is unavailable.",
                              retry_after=max(1.0, self._retry_interval))
        self._fallbacks += 1
        return self._local.admit_now(demand)

    async def settle(self, ticket: Ticket, *, tokens: int, cost_micros: int) -> bool:
        if ticket.origin == self._local.origin:
            counted = await self._local.settle(ticket, tokens=tokens, cost_micros=cost_micros)
            if counted and ticket.budgeted and cost_micros:
                # Admitted locally during an outage: the money was still spent, so the
                # shared budget must hear of it (booked as cost only, no ticket).
                await self._book((_cost_only(ticket), 0, cost_micros))
            return counted
        return await self._book((ticket, tokens, cost_micros))

    async def _book(self, item: _Pending) -> bool:
        try:
            counted = await self._run_settle(item)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            self._queue(item)
            return True
        await self._recovered()
        return counted

    def _queue(self, item: _Pending) -> None:
        if len(self._pending) >= self._max_pending:
            self._dropped_micros += self._pending.popleft()[2]
        self._pending.append(item)
        if self._replayer is None or self._replayer.done():
            self._replayer = asyncio.get_running_loop().create_task(
                self._replay_until_empty(), name="llmgate-settle-replay")

    async def _replay_until_empty(self) -> None:
        """Retry queued settlements in the background: an outage must not wait for the next
        request to book what it left behind."""
        while self._pending:
            await asyncio.sleep(self._retry_interval)
            if await self._replay():
                self._degraded = False

    async def _run_settle(self, item: _Pending) -> bool:
        ticket, tokens, cost = item
        args: list[str | int] = [self._now_arg(), ticket.id, tokens, cost, ticket.period,
                "1" if ticket.budgeted else "0"]
        booked = int(await self._settle(keys=keys_for(ticket.scope), args=args))
        if booked == 2:
            self._orphaned += 1
        return booked > 0

    async def spend(self, scope: str, period: str) -> Spend:
        try:
            raw = cast(list[int], await self._spend(keys=keys_for(scope),
                                                    args=[self._now_arg(), period]))
        except (RedisError, OSError) as exc:
            self._failed(exc)
            raise Unavailable("The shared limit store (Redis) is unavailable.") from exc
        await self._recovered()
        return Spend(int(raw[0]), int(raw[1]), int(raw[2]), _unopt(raw[3]))

    def _failed(self, exc: BaseException) -> None:
        now = self._monotonic()
        self._errors += 1
        self._retry_at = now + self._retry_interval
        if not self._degraded:
            self._degraded = True
            self._next_log = now + self._log_interval
            self._fallbacks_logged = self._fallbacks
            log.warning("Redis unavailable (%s: %s); %s", type(exc).__name__, exc,
                        "enforcing limits per pod (failOpen)" if self.fail_mode == "failOpen"
                        else "refusing requests (failClosed)")
        elif now >= self._next_log:
            self._next_log = now + self._log_interval
            log.warning("Redis still unavailable: %d requests admitted locally since the "
                        "last report, %d settlements pending",
                        self._fallbacks - self._fallbacks_logged, len(self._pending))
            self._fallbacks_logged = self._fallbacks

    async def _recovered(self) -> None:
        if not self._degraded:
            return
        self._degraded = False
        await self._replay()

    async def _replay(self) -> bool:
        """Book the queued settlements in order; False (and still queued) if Redis fails.
        One replay at a time: a cost-only booking has no ticket to make a second one a
        no-op."""
        async with self._replaying:
            return await self._replay_queue()

    async def _replay_queue(self) -> bool:
        replayed = 0
        while self._pending:
            item = self._pending[0]  # dequeued once booked
            try:
                await self._run_settle(item)
            except (RedisError, OSError) as exc:
                self._failed(exc)
                return False
            self._pending.popleft()
            replayed += 1
        if replayed:
            log.warning("Redis answered again: limits are shared again; %d settlements "
                        "replayed", replayed)
        return True

    async def ready(self) -> bool:
        """Under failOpen always (requests are served either way); under failClosed only
        while Redis answers a PING, so the kubelet takes a pod that would 503 out of service
        even when no request has failed yet."""
        if self.fail_mode != "failClosed":
            return True
        try:
            await asyncio.wait_for(self._redis.ping(), READY_PING_TIMEOUT)
        except (RedisError, OSError, TimeoutError):
            return False
        return True

    async def aclose(self) -> None:
        if self._pending:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._replay(), self._retry_interval)
        if self._replayer is not None:
            self._replayer.cancel()
            await asyncio.gather(self._replayer, return_exceptions=True)
        await self._local.aclose()
        if self._owns_client:
            await self._redis.aclose()


def _opt(limit: int | None) -> int:
    return -1 if limit is None else limit


def _unopt(value: Any) -> int | None:
    number = int(value)
    return None if number < 0 else number


def _cost_only(ticket: Ticket) -> Ticket:
    return Ticket(id="", scope=ticket.scope, origin=RedisStore.origin, budgeted=True,
                  period=ticket.period, reserve_micros=0, tokens=0,
                  admitted_ms=ticket.admitted_ms)
