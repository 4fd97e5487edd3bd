"""RedisStore: the Store shared by every replica; one script call per event-loop iteration.

Created by the sidecar's app factory when a Redis URL is set; called only through `Limiter`.
Admissions and settlements are not sent one by one: each is queued, and what one iteration
of the event loop queued goes to Redis as ONE call of one Lua script (`BATCH_LUA`, by
EVALSHA), settlements first, then admissions; so a request's admission costs one round
trip, shared with every other request admitted in the same iteration, and its settlement
rides along with a later one. Each item in a call is checked and applied exactly as a call
of its own would be (the script is atomic). Time comes from Redis (`TIME`) so replicas
agree; every key of a virtual key shares the hash tag `llmgate:{<namespace>/<key>}:`
(layout in llmgate_contract.budget, which the operator reads spend with) and a Redis
Cluster batch is split by slot, so every call touches one slot; every key has a TTL; money
is integer micro-dollars. On Redis errors, failOpen degrades to an internal MemoryStore
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
from llmgate_contract.redis_client import RedisClient, connect, slot_of
from redis.exceptions import RedisError

from llmgate_sidecar.errors import Unavailable
from llmgate_sidecar.policy.redis_scripts import BATCH_LUA, SPEND_LUA
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


# A settlement not yet booked in Redis: (ticket, tokens, cost_micros, cost_only). Cost-only:
# spend made under a local ticket during an outage, booked under an id of its own so that
# a replay of it is a no-op like any other settlement's.
_Pending = tuple[Ticket, int, int, bool]
# A settlement waiting for the next call, and who waits for its outcome (None: nobody).
_Settling = tuple[_Pending, "asyncio.Future[bool] | None"]
# An admission waiting for the next call; its future gets the outcome, or None when Redis
# failed (the caller then falls back by its fail mode).
_Asking = tuple[Demand, "asyncio.Future[Ticket | Refusal | None]"]
# Items per script call: bounds how long one call holds Redis (a busier iteration sends
# several calls).
MAX_BATCH = 128


class RedisStore:
    """The Store in Redis, atomic across replicas; see the module docstring for batching.

    `clock` is for tests only: when given, scripts take time from it instead of Redis TIME.
    After a Redis error, admits go straight to the local store for `retry_interval` seconds
    before Redis is tried again (so an outage does not add a timeout to every request).
    Settlements that cannot reach Redis (their call failed, whether or not Redis ran it, or
    Redis is known to be down) are queued (up to `max_pending`; beyond, the oldest is dropped
    and its cost counted in `health.dropped_micros`) and replayed, in order and
    idempotently (each carries the settled mark of its ticket), by a background task every
    `retry_interval` until Redis answers (and on the first call that succeeds); so is the
    spend of tickets admitted locally during the outage. A settlement whose ticket Redis no
    longer knows still books its cost.
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
        self._batch = client.register_script(BATCH_LUA)
        self._spend = client.register_script(SPEND_LUA)
        self._slot = slot_of(client)
        self._keys: dict[str, list[str]] = {}
        self._settling: list[_Settling] = []
        self._asking: list[_Asking] = []
        self._flush_handle: asyncio.Handle | None = None
        self._flights: set[asyncio.Task[None]] = set()
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

    def _keys_of(self, scope: str) -> list[str]:
        keys = self._keys.get(scope)
        if keys is None:
            if len(self._keys) >= 4096:  # bounded: a sidecar serves a handful of keys
                self._keys.clear()
            keys = self._keys[scope] = keys_for(scope)
        return keys

    def _down(self) -> bool:
        """Redis failed less than `retry_interval` ago: do not try it yet."""
        return self._degraded and self._monotonic() < self._retry_at

    async def admit(self, demand: Demand) -> Ticket | Refusal:
        if self._down():
            return self._fallback(demand)
        answer: asyncio.Future[Ticket | Refusal | None] = \
            asyncio.get_running_loop().create_future()
        self._asking.append((demand, answer))
        self._schedule()
        outcome = await answer
        return self._fallback(demand) if outcome is None else outcome

    def _fallback(self, demand: Demand) -> Ticket | Refusal:
        if self.fail_mode == "failClosed":
            raise Unavailable("The shared limit store (Redis) is unavailable.",
                              retry_after=max(1.0, self._retry_interval))
        self._fallbacks += 1
        return self._local.admit_now(demand)

    async def settle(self, ticket: Ticket, *, tokens: int, cost_micros: int) -> bool:
        return await self.settle_soon(ticket, tokens=tokens, cost_micros=cost_micros)

    def settle_soon(self, ticket: Ticket, *, tokens: int,
                    cost_micros: int) -> asyncio.Future[bool]:
        """Book it with the next call (no task, no round trip of its own); the future is
        True also when it was queued for a replay."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if ticket.origin == self._local.origin:
            counted = self._local.settle_now(ticket, tokens=tokens, cost_micros=cost_micros)
            if counted and ticket.budgeted and cost_micros:
                # Admitted locally during an outage: the money was still spent, so the
                # shared budget must hear of it (booked as cost only, under its own id);
                # done once that is booked (or queued for a replay), like any settlement.
                self._settle_soon((_cost_only(ticket), 0, cost_micros, True), done)
            else:
                done.set_result(counted)
        else:
            self._settle_soon((ticket, tokens, cost_micros, False), done)
        return done

    def _settle_soon(self, item: _Pending, done: asyncio.Future[bool] | None) -> None:
        if self._down():
            self._queue(item)
            if done is not None:
                done.set_result(True)
            return
        self._settling.append((item, done))
        self._schedule()

    def _schedule(self) -> None:
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Send what this loop iteration queued (called soon after the first item)."""
        self._flush_handle = None
        settling, asking = self._settling, self._asking
        self._settling, self._asking = [], []
        loop = asyncio.get_running_loop()
        for part in self._split(settling, asking):
            task = loop.create_task(self._send(*part), name="llmgate-store-batch")
            self._flights.add(task)
            task.add_done_callback(self._flights.discard)

    def _split(self, settling: list[_Settling], asking: list[_Asking],
               ) -> list[tuple[list[_Settling], list[_Asking]]]:
        """One (settlements, admissions) part per script call: per Cluster slot, at most
        MAX_BATCH items each."""
        groups = [(settling, asking)]
        if self._slot is not None and (len(settling) + len(asking)) > 1:
            slot = self._slot
            by_slot: dict[int, tuple[list[_Settling], list[_Asking]]] = {}
            for settle in settling:
                key = self._keys_of(settle[0][0].scope)[0]
                by_slot.setdefault(slot(key), ([], []))[0].append(settle)
            for ask in asking:
                key = self._keys_of(ask[0].scope)[0]
                by_slot.setdefault(slot(key), ([], []))[1].append(ask)
            groups = list(by_slot.values())
        parts = []
        for group_settling, group_asking in groups:
            while len(group_settling) + len(group_asking) > MAX_BATCH:
                settles = group_settling[:MAX_BATCH]
                asks = group_asking[:MAX_BATCH - len(settles)]
                parts.append((settles, asks))
                group_settling = group_settling[len(settles):]
                group_asking = group_asking[len(asks):]
            parts.append((group_settling, group_asking))
        return parts

    async def _send(self, settling: list[_Settling], asking: list[_Asking]) -> None:
        """One script call for `settling` and `asking`; every waiter gets its outcome."""
        asking = [ask for ask in asking if not ask[1].cancelled()]
        if not settling and not asking:
            return
        ids = [secrets.token_hex(12) for _ in asking]
        try:
            raw = await self._call([item for item, _ in settling],
                                   [(demand, tid) for (demand, _), tid in zip(asking, ids,
                                                                              strict=True)])
        except BaseException as exc:
            # Redis failed, or something else did: no waiter may wait forever, and no
            # settlement may be lost (Redis may or may not have run the call: a replay of
            # a settlement it ran is a no-op).
            if isinstance(exc, RedisError | OSError):
                self._failed(exc)
            for item, done in settling:
                self._queue(item)
                if done is not None and not done.done():
                    done.set_result(True)
            for _, answer in asking:
                if not answer.done():
                    answer.set_result(None)
            if isinstance(exc, RedisError | OSError):
                return
            raise
        # Redis answers again: book what the outage queued before anyone hears back.
        await self._recovered()
        now = int(raw[0])
        for (_, done), booked in zip(settling, raw[1:], strict=False):
            if int(booked) == 2:
                self._orphaned += 1
            if done is not None and not done.done():
                done.set_result(int(booked) > 0)
        for (demand, answer), tid, result in zip(asking, ids, raw[1 + len(settling):],
                                                 strict=True):
            outcome = _outcome(demand, tid, now, result)
            if not answer.done():
                answer.set_result(outcome)
            elif isinstance(outcome, Ticket):
                # Its request was cancelled while the call was under way, before any
                # upstream call: give the slot and reservation back at once (nothing spent).
                self._settle_soon((outcome, 0, 0, False), None)

    async def _call(self, settles: list[_Pending], admits: list[tuple[Demand, str]],
                    ) -> list[Any]:
        """One EVALSHA of BATCH_LUA (keys of one Cluster slot): [now, results...]."""
        keys: list[str] = []
        index: dict[str, int] = {}
        args: list[str | int] = [self._now_arg(), len(settles)]
        for ticket, tokens, cost, cost_only in settles:
            at = index.get(ticket.scope)
            if at is None:
                at = index[ticket.scope] = len(index)
                keys += self._keys_of(ticket.scope)
            args.append(f"{at} {ticket.id} {tokens} {cost} {ticket.period} "
                        f"{1 if ticket.budgeted else 0} {1 if cost_only else 0}")
        for demand, tid in admits:
            at = index.get(demand.scope)
            if at is None:
                at = index[demand.scope] = len(index)
                keys += self._keys_of(demand.scope)
            args.append(f"{at} {tid} {_opt(demand.requests_per_minute)} "
                        f"{_opt(demand.tokens_per_minute)} {demand.tokens} "
                        f"{_opt(demand.max_parallel)} {_opt(demand.budget_micros)} "
                        f"{demand.period} {demand.reserve_micros} {demand.lease_ms}")
        return cast(list[Any], await self._batch(keys=keys, args=args))

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

    async def spend(self, scope: str, period: str) -> Spend:
        try:
            raw = cast(list[int], await self._spend(keys=self._keys_of(scope),
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
        """Book the queued settlements in order, MAX_BATCH per call; False (and still
        queued) if Redis fails. One replay at a time, so a slow one is not doubled."""
        async with self._replaying:
            return await self._replay_queue()

    async def _replay_queue(self) -> bool:
        replayed = 0
        while self._pending:
            chunk = [self._pending[i] for i in range(min(MAX_BATCH, len(self._pending)))]
            try:
                raw = await self._call(chunk, [])
            except (RedisError, OSError) as exc:
                self._failed(exc)
                return False
            for item, booked in zip(chunk, raw[1:], strict=True):
                # dequeued once booked (an overflow meanwhile may have dropped it already)
                if self._pending and self._pending[0] is item:
                    self._pending.popleft()
                if int(booked) == 2:
                    self._orphaned += 1
            replayed += len(chunk)
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
        """Send what is queued, wait for the calls under way, replay what failed (bounded
        by `retry_interval`), then close."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush()
        if self._flights:
            await asyncio.gather(*list(self._flights), return_exceptions=True)
        if self._pending:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._replay(), self._retry_interval)
        if self._replayer is not None:
            self._replayer.cancel()
            await asyncio.gather(self._replayer, return_exceptions=True)
        await self._local.aclose()
        if self._owns_client:
            await self._redis.aclose()


def _outcome(demand: Demand, tid: str, now: int, result: list[Any]) -> Ticket | Refusal:
    """A ticket or a refusal from one admission's result in a BATCH_LUA answer."""
    if int(result[0]) == 0:
        return Refusal(cast(Kind, result[1]), int(result[2]), str(result[3]))
    budgeted = demand.budget_micros is not None
    return Ticket(
        id=tid, scope=demand.scope, origin=RedisStore.origin, budgeted=budgeted,
        period=demand.period, reserve_micros=demand.reserve_micros if budgeted else 0,
        tokens=demand.tokens, admitted_ms=now, remaining_requests=_unopt(result[1]),
        remaining_tokens=_unopt(result[2]), remaining_micros=_unopt(result[3]),
    )


def _opt(limit: int | None) -> int:
    return -1 if limit is None else limit


def _unopt(value: Any) -> int | None:
    number = int(value)
    return None if number < 0 else number


def _cost_only(ticket: Ticket) -> Ticket:
    return Ticket(id="c" + secrets.token_hex(12), scope=ticket.scope,
                  origin=RedisStore.origin, budgeted=True, period=ticket.period,
                  reserve_micros=0, tokens=0, admitted_ms=ticket.admitted_ms)
