"""VirtualKey spend from the shared store: the Redis reader and the readings it keeps.

`main` builds a `SpendTracker` (with a `SpendReader` when `--redis-url` is set) and hands it
to the `Reconciler`, whose status builder (`render.desired_status`) shows the readings; the
spend loop in `handlers` calls `SpendTracker.poll` every `spend_seconds`. Read-only on Redis
(the sidecar owns every write, in the layout of `llmgate_contract.budget`); no Kubernetes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from llmgate_contract.budget import (
    BUDGET_FIELDS,
    budget_key,
    key_scope,
    period_bounds,
    spent_in_period,
)
from llmgate_contract.redis_client import RedisClient, connect
from pydantic import ValidationError
from redis.exceptions import RedisError

from llmgate_operator import api

log = logging.getLogger(__name__)
REDIS_TIMEOUT = 2.0  # seconds; a poll is one round trip, so this bounds a whole poll


@dataclass(frozen=True)
class BudgetRef:
    """A VirtualKey with a budget, as its spec says now."""

    namespace: str
    name: str
    period: str


@dataclass(frozen=True)
class Reading:
    """One key's spend as last read: micro-dollars spent in the `period` that starts at
    `period_start_ms` (None: a lifetime budget), first seen with this value at `read_at`."""

    period: str
    spent_micros: int
    period_start_ms: int | None
    read_at: datetime

    def same_value(self, other: Reading | None) -> bool:
        return other is not None and (self.period, self.spent_micros, self.period_start_ms) \
            == (other.period, other.spent_micros, other.period_start_ms)


class SpendUnavailable(Exception):
    """Redis could not be read (down, timed out, refused)."""


def budget_refs(virtual_keys: Iterable[Mapping[str, Any]]) -> list[BudgetRef]:
    """The VirtualKey bodies that have a valid budget (others have no spend to show)."""
    refs: list[BudgetRef] = []
    for body in virtual_keys:
        meta = body.get("metadata") or {}
        try:
            spec = api.parse_spec("VirtualKey", body.get("spec"))
        except ValidationError:
            continue  # the reconcile reports InvalidSpec
        assert isinstance(spec, api.VirtualKeySpec)
        if spec.budget is not None and meta.get("namespace") and meta.get("name"):
            refs.append(BudgetRef(meta["namespace"], meta["name"], spec.budget.period))
    return refs


class SpendReader:
    """Reads budget hashes in one pipelined round trip, with Redis's own clock (`TIME`), so
    the period boundaries agree with the ones the sidecars' scripts use."""

    def __init__(self, client: RedisClient, *, owns_client: bool = False) -> None:
        self._redis = client
        self._owns_client = owns_client

    @classmethod
    def from_url(cls, url: str, *, timeout: float = REDIS_TIMEOUT,
                 password: str | None = None) -> SpendReader:
        client = connect(url, decode_responses=True, timeout=timeout, max_connections=4,
                         password=password)
        return cls(client, owns_client=True)

    async def read(self, refs: Sequence[BudgetRef]) -> tuple[int, list[int]]:
        """(Redis time in ms, micro-dollars spent in the current period of each ref)."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                # execute_command: a cluster pipeline refuses pipe.time() (it has no key),
                # yet routes the raw command to any node, which is all a clock needs.
                pipe.execute_command("TIME")
                for ref in refs:
                    pipe.hmget(budget_key(key_scope(ref.namespace, ref.name)),
                               list(BUDGET_FIELDS))
                results = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise SpendUnavailable(f"{type(exc).__name__}: {exc}") from exc
        seconds, micros = results[0]
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        return now_ms, [spent_in_period(fields, ref.period, now_ms)
                        for ref, fields in zip(refs, results[1:], strict=True)]

    async def aclose(self) -> None:
        if self._owns_client:
            await self._redis.aclose()


class SpendObserver(Protocol):
    """Where poll outcomes go (the operator's /metrics)."""

    def spend_polled(self, result: str) -> None: ...


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SpendTracker:
    """The latest reading of every budgeted key; without a reader it stays empty (no Redis:
    status shows no spend, and whatever spend status is there is left alone)."""

    def __init__(self, reader: SpendReader | None = None, *,
                 observer: SpendObserver | None = None,
                 clock: Callable[[], datetime] = _utcnow) -> None:
        self.reader = reader
        self._observer = observer
        self._clock = clock
        self._readings: dict[tuple[str, str], Reading] = {}
        self._down = False

    @property
    def enabled(self) -> bool:
        return self.reader is not None

    def readings(self, namespace: str) -> dict[str, Reading]:
        """Readings of `namespace`'s keys by name (kept as they were while Redis is down)."""
        return {name: r for (ns, name), r in self._readings.items() if ns == namespace}

    async def poll(self, virtual_keys: Iterable[Mapping[str, Any]]) -> set[str]:
        """Read every budgeted key once; return the namespaces whose readings changed."""
        if self.reader is None:
            return set()
        refs = budget_refs(virtual_keys)
        wanted = {(ref.namespace, ref.name) for ref in refs}
        for gone in [key for key in self._readings if key not in wanted]:
            del self._readings[gone]
        if not refs:
            return set()
        try:
            now_ms, spent = await self.reader.read(refs)
        except SpendUnavailable as exc:
            self._failed(exc)
            return set()
        self._recovered()
        changed: set[str] = set()
        now = self._clock()
        for ref, micros in zip(refs, spent, strict=True):
            start, end = period_bounds(ref.period, now_ms)
            reading = Reading(ref.period, micros, None if end is None else start, now)
            key = (ref.namespace, ref.name)
            if not reading.same_value(self._readings.get(key)):
                self._readings[key] = reading
                changed.add(ref.namespace)
        return changed

    def _failed(self, exc: SpendUnavailable) -> None:
        # One line per poll (the poll interval bounds the rate), not one per key.
        if self._observer is not None:
            self._observer.spend_polled("error")
        log.warning("cannot read VirtualKey spend from Redis (%s); %s", exc,
                    "keeping the last spend status" if self._down or self._readings
                    else "no spend status until it answers")
        self._down = True

    def _recovered(self) -> None:
        if self._observer is not None:
            self._observer.spend_polled("success")
        if self._down:
            log.info("Redis answered again: VirtualKey spend status is current again")
        self._down = False
