"""The sidecar's Prometheus metrics, on a registry of its own, with bounded labels only.

One `Metrics` per app, created in `create_app` and passed to whoever records. Labels are
route / provider / model names from the compiled config (bounded by the config), virtual
key *names* (never a key), status classes and error classes; never a prompt or a raw key.
Requests for names outside the config are recorded under the label value `unknown`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# From 100 µs (gateway overhead) to minutes (long generations).
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
OVERHEAD_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01,
                    0.025, 0.05, 0.1, 0.25, 1.0)
UNKNOWN = "unknown"


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("llmgate_requests", "Requests answered, by outcome",
                                ["route", "provider", "model", "virtual_key", "status_class"],
                                registry=r)
        self.duration = Histogram("llmgate_request_duration_seconds",
                                  "Time from request to the last byte of the response",
                                  ["route", "stream"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("llmgate_time_to_first_token_seconds",
                              "Time from request to the first streamed chunk",
                              ["route", "provider"], buckets=LATENCY_BUCKETS, registry=r)
        self.overhead = Histogram("llmgate_gateway_overhead_seconds",
                                  "Time spent in the gateway itself (total minus upstream)",
                                  ["stream"], buckets=OVERHEAD_BUCKETS, registry=r)
        self.tokens = Counter("llmgate_tokens", "Tokens reported by upstream usage",
                              ["route", "provider", "model", "virtual_key", "direction"],
                              registry=r)
        self.in_flight = Gauge("llmgate_in_flight_requests",
                               "Requests being served now (the HPA signal)", registry=r)
        self.attempts = Counter("llmgate_upstream_attempts", "Upstream attempts by outcome",
                                ["provider", "model", "outcome"], registry=r)
        self.upstream_errors = Counter("llmgate_upstream_errors",
                                       "Failed upstream attempts by error class",
                                       ["provider", "error_class"], registry=r)
        self.retries = Counter("llmgate_retries", "Retries of the same target", ["route"],
                               registry=r)
        self.fallbacks = Counter("llmgate_fallbacks", "Moves to the next target, by reason",
                                 ["route", "reason"], registry=r)
        self.stream_errors = Counter("llmgate_stream_errors",
                                     "Streams ended by an upstream failure after the first "
                                     "byte, or by the client going away",
                                     ["route", "reason"], registry=r)
        self.rejections = Counter("llmgate_rejections",
                                  "Requests refused before any upstream call, by reason",
                                  ["reason"], registry=r)
        self.circuit_open = Gauge("llmgate_circuit_open",
                                  "1 while the circuit breaker of a target is open",
                                  ["provider", "model"], registry=r)
        self.config_generation = Gauge("llmgate_config_info",
                                       "The loaded config generation (value is always 1)",
                                       ["generation"], registry=r)
        self.config_reloads = Counter("llmgate_config_reloads", "Config loads by result",
                                      ["result"], registry=r)
        self._generation: str | None = None

    def config_loaded(self, result: str, generation: str | None) -> None:
        self.config_reloads.labels(result).inc()
        if result == "success" and generation and generation != self._generation:
            if self._generation is not None:
                self.config_generation.remove(self._generation)
            self.config_generation.labels(generation).set(1)
            self._generation = generation
