"""The sidecar's Prometheus metrics, on a registry of its own, with bounded labels only.

One `Metrics` per app, created in `create_app` and passed to whoever records. Labels are
route / provider / model names from the compiled config (bounded by the config), virtual
key *names* (never a key), status classes, error classes and fixed reason sets; never a
prompt, a raw key or a name a client made up (those become `unknown`). Per API request,
`Metrics.finish` fills the request counter and the duration histogram from the
request's `RequestRecord` (see `observe.observed`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Generic, Protocol, TypeVar, runtime_checkable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from llmgate_sidecar.observability.record import RequestRecord

# From 100 µs (gateway overhead) to minutes (long generations).
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
OVERHEAD_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01,
                    0.025, 0.05, 0.1, 0.25, 1.0)

# `llmgate_rejections_total{reason}`: the only values the label can take.
REJECTION_REASONS = ("rate_limit_requests", "rate_limit_tokens", "parallel", "budget",
                     "auth", "forbidden", "guardrail", "not_found", "bad_request",
                     "too_large", "unavailable", "upstream", "internal", "other")
_LIMIT_KINDS = {"requests": "rate_limit_requests", "tokens": "rate_limit_tokens",
                "parallel": "parallel", "budget": "budget"}
_CODE_REASONS = {
    "invalid_api_key": "auth", "missing_api_key": "auth", "key_rotated": "auth",
    "key_disabled": "auth", "key_expired": "auth",
    "model_not_allowed": "forbidden", "guardrail_blocked": "guardrail",
    "input_too_large": "guardrail", "model_not_found": "not_found",
    "unknown_url": "not_found", "bad_request": "bad_request", "invalid_json": "bad_request",
    "invalid_type": "bad_request", "invalid_metadata": "bad_request",
    "empty_array": "bad_request", "integer_below_min_value": "bad_request",
    "missing_required_parameter": "bad_request",
    "method_not_allowed": "bad_request", "too_large": "too_large",
    "request_too_large": "too_large", "config_not_loaded": "unavailable",
    "service_unavailable": "unavailable", "context_length_exceeded": "upstream",
    "content_filter": "upstream", "internal": "internal", "internal_error": "internal"}


def rejection_reason(raw: str) -> str:
    """Map an error code (or `code:kind` for limits) onto `REJECTION_REASONS`."""
    code, _, kind = raw.partition(":")
    if kind:
        return _LIMIT_KINDS.get(kind, "other")
    if code.startswith("upstream_"):
        return "upstream"
    return _CODE_REASONS.get(code, "other")


class _Rejections:
    """`llmgate_rejections_total` behind a `labels(raw)` that can only yield known reasons:
    the app's middleware passes error codes; this keeps the label set fixed."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self._children = _Children(counter)

    def labels(self, raw: str) -> Counter:
        return self._children.labels(rejection_reason(raw))


M = TypeVar("M", Counter, Gauge, Histogram)


class _Children(Generic[M]):
    """A labelled metric whose `labels(...)` children are remembered: prometheus_client's own
    lookup validates, converts and takes a lock on every call, ~9 times per request. Labels
    are bounded (see the module docstring), so this dict is bounded like the metric's own.
    Only for metrics whose children are never removed (a removed child would be kept)."""

    __slots__ = ("_children", "metric")

    def __init__(self, metric: M) -> None:
        self.metric: M = metric
        self._children: dict[tuple[str, ...], M] = {}

    def labels(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


def _counter(name: str, doc: str, labels: list[str],
             r: CollectorRegistry) -> _Children[Counter]:
    return _Children(Counter(name, doc, labels, registry=r))


def _histogram(name: str, doc: str, labels: list[str], buckets: tuple[float, ...],
               r: CollectorRegistry) -> _Children[Histogram]:
    return _Children(Histogram(name, doc, labels, buckets=buckets, registry=r))


class StoreHealth(Protocol):
    """A limit store's health counters (`policy.redis_store.StoreHealth`)."""

    @property
    def degraded(self) -> bool: ...
    @property
    def fallbacks(self) -> int: ...
    @property
    def errors(self) -> int: ...
    @property
    def pending(self) -> int: ...
    @property
    def orphaned(self) -> int: ...
    @property
    def dropped_micros(self) -> int: ...


@runtime_checkable
class ReportsHealth(Protocol):
    """A limit store that reports its health (the Redis store; the memory store does not)."""

    @property
    def health(self) -> StoreHealth: ...


class _StoreHealth:
    """Collects the Redis store's health counters at scrape time (nothing on the hot path)."""

    def __init__(self, store: ReportsHealth) -> None:
        self.store = store

    def describe(self) -> Iterable[Metric]:
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        health = self.store.health
        yield CounterMetricFamily("llmgate_redis_errors", "Redis calls of the limit store "
                                  "that failed", value=health.errors)
        yield CounterMetricFamily("llmgate_redis_local_admits", "Requests admitted by "
                                  "per-pod limits because Redis failed (failOpen)",
                                  value=health.fallbacks)
        yield GaugeMetricFamily("llmgate_redis_degraded", "1 while limits are enforced per "
                                "pod because Redis is unreachable", value=int(health.degraded))
        yield GaugeMetricFamily("llmgate_redis_pending_settlements", "Settlements queued "
                                "until Redis answers again", value=health.pending)
        yield CounterMetricFamily("llmgate_redis_orphan_settlements", "Settlements booked "
                                  "for tickets Redis had lost (restart without persistence, "
                                  "failover): their reservations were gone",
                                  value=health.orphaned)
        yield CounterMetricFamily("llmgate_redis_dropped_settlements_usd", "Cost of "
                                  "settlements dropped because the queue for an "
                                  "unreachable Redis was full",
                                  value=health.dropped_micros / 1_000_000)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._define_traffic(self.registry)
        self._define_upstream(self.registry)
        self._define_limits(self.registry)
        self._generation: str | None = None
        self._watched: ReportsHealth | None = None
        self._checked: object = None  # the last store `watch_store` looked at

    def _define_traffic(self, r: CollectorRegistry) -> None:
        self.requests = _counter("llmgate_requests", "Requests answered, by outcome",
                                 ["route", "provider", "model", "virtual_key", "status_class"], r)
        self.duration = _histogram("llmgate_request_duration_seconds",
                                   "Time from request to the last byte of the response",
                                   ["route", "stream"], LATENCY_BUCKETS, r)
        self.ttft = _histogram("llmgate_time_to_first_token_seconds",
                               "Time from request to the first streamed chunk",
                               ["route", "provider"], LATENCY_BUCKETS, r)
        self.overhead = _histogram("llmgate_gateway_overhead_seconds",
                                   "Time spent in the gateway itself (total minus upstream)",
                                   ["stream"], OVERHEAD_BUCKETS, r)
        self.tokens = _counter("llmgate_tokens", "Tokens reported by upstream usage",
                               ["route", "provider", "model", "virtual_key", "direction"], r)
        self.cost = _counter("llmgate_cost_usd", "Cost in USD booked against budgets: priced "
                             "from upstream usage, or the reservation when usage is unknown",
                             ["route", "provider", "model", "virtual_key"], r)
        self.in_flight = Gauge("llmgate_in_flight_requests",
                               "Requests being served now (the HPA signal)", registry=r)
        self.cache = _counter("llmgate_cache_requests", "Response cache lookups by result "
                              "(hit, miss, refresh, bypass)", ["route", "result"], r)
        # Not cached by `_Children`: the previous generation's child is removed on reload.
        self.config_generation = Gauge("llmgate_config_info",
                                       "The loaded config generation (value is always 1)",
                                       ["generation"], registry=r)
        self.config_reloads = _counter("llmgate_config_reloads", "Config loads by result "
                                       "(success, error, refused: a newer schema version)",
                                       ["result"], r)
        self.config_schema = Gauge("llmgate_config_schema_version",
                                   "Schema version of the loaded config document", registry=r)
        self.config_ignored = Gauge("llmgate_config_ignored_fields",
                                    "Fields of the loaded config this sidecar does not know and "
                                    "left out (a newer operator's optional additions)",
                                    registry=r)
        self.config_refused = Gauge("llmgate_config_refused",
                                    "1 while the newest config is refused (a schema version this "
                                    "sidecar does not read) and an older one is served, else 0",
                                    registry=r)

    def _define_upstream(self, r: CollectorRegistry) -> None:
        self.attempts = _counter("llmgate_upstream_attempts", "Upstream attempts by outcome",
                                 ["provider", "model", "outcome"], r)
        self.upstream_errors = _counter("llmgate_upstream_errors",
                                        "Failed upstream attempts by error class",
                                        ["provider", "error_class"], r)
        self.retries = _counter("llmgate_retries", "Retries of the same target", ["route"], r)
        self.fallbacks = _counter("llmgate_fallbacks", "Moves to the next target, by reason",
                                  ["route", "reason"], r)
        self.stream_errors = _counter("llmgate_stream_errors",
                                      "Streams ended by an upstream failure after the first "
                                      "byte, or by the client going away",
                                      ["route", "reason"], r)
        self.circuit_open = _Children(Gauge("llmgate_circuit_open",
                                            "1 while the circuit breaker of a target is open",
                                            ["provider", "model"], registry=r))

    def _define_limits(self, r: CollectorRegistry) -> None:
        self.rejections = _Rejections(Counter(
            "llmgate_rejections", "Requests answered with a gateway error, by reason "
            "(limits and budgets by kind; upstream = every target failed)", ["reason"],
            registry=r))
        self.budget_remaining = _Children(Gauge(
            "llmgate_budget_remaining_usd", "USD left in the current budget period of a "
            "virtual key, as of its last settled request", ["virtual_key"], registry=r))
        self.store_duration = _histogram("llmgate_store_duration_seconds",
                                         "Latency of one limit-store call (a Redis round "
                                         "trip, or in memory)", ["operation", "store"],
                                         OVERHEAD_BUCKETS, r)
        self.store_errors = _counter("llmgate_store_errors", "Limit-store calls that raised",
                                     ["operation", "store"], r)
        # Money drift (docs/limits.md, "Money"): each should stay 0 but the first.
        self.over_reserved = _counter(
            "llmgate_over_reserved_usd", "Reserved minus booked, summed over settled requests "
            "(the cost of worst-case reservations)", ["virtual_key"], r)
        self.under_reserved = _counter(
            "llmgate_under_reserved_usd", "Booked beyond a request's reservation (a "
            "reservation that was not a worst case widens the budget bound)",
            ["virtual_key"], r)
        self.unbooked = _counter(
            "llmgate_unbooked_usd", "Cost a settlement could not book (the store failed "
            "under failClosed, or raised)", ["virtual_key"], r)

    def watch_store(self, store: object) -> None:
        """Export a Redis store's health counters (idempotent; ignores stores without).
        Called on every admit: the same store again returns at once (a runtime-checkable
        protocol's `isinstance` costs microseconds)."""
        if store is self._checked:
            return
        self._checked = store
        if store is self._watched or not isinstance(store, ReportsHealth):
            return
        if self._watched is not None:
            raise ValueError("Metrics already watches another store")
        self._watched = store
        self.registry.register(_StoreHealth(store))

    def config_loaded(self, result: str, generation: str | None,
                      schema_version: int | None = None, ignored: int = 0) -> None:
        """A config load: success, error (torn or invalid: the last good one is kept) or
        refused (a schema version this sidecar does not read)."""
        self.config_reloads.labels(result).inc()
        self.config_refused.set(1 if result == "refused" else 0)
        if result == "success" and schema_version is not None:
            self.config_schema.set(schema_version)
            self.config_ignored.set(ignored)
        if result == "success" and generation and generation != self._generation:
            if self._generation is not None:
                self.config_generation.remove(self._generation)
            self.config_generation.labels(generation).set(1)
            self._generation = generation

    def exposition(self) -> tuple[bytes, str]:
        """The registry in the Prometheus text format, and its content type (for /metrics)."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def finish(self, record: RequestRecord, elapsed: float) -> None:
        self.duration.labels(record.route, str(record.stream).lower()).observe(elapsed)
        self.requests.labels(record.route, record.provider, record.model, record.virtual_key,
                             record.status_class).inc()
