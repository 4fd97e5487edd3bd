"""The operator's ops port: `/healthz`, `/readyz`, `/metrics` (its own Prometheus registry).

`main` creates `OperatorMetrics` (handed to the reconciler as its observer and to the
webhook server as its registry) and `Health`, then `start`s the server and cleans it up.
No kopf, no Kubernetes client; metric labels are bounded (never a namespace or a name).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

log = logging.getLogger(__name__)


class OperatorMetrics:
    """Reconcile and spend-poll metrics on a private registry (implements
    `reconcile.Observer` and `spend.SpendObserver`)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.reconciles = Counter(
            "llmgate_operator_reconciles_total",
            "Namespace reconciles, by result (success, error).",
            ["result"], registry=self.registry)
        for result in ("success", "error"):
            self.reconciles.labels(result=result)  # export zeros so rate() works at once
        self.duration = Histogram(
            "llmgate_operator_reconcile_duration_seconds",
            "Time to reconcile one namespace (keys, compile, writes, status).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry)
        self.compile_duration = Histogram(
            "llmgate_operator_compile_duration_seconds",
            "Time of the pure compile of one namespace (CRs -> compiled config).",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry)
        self.managed = Gauge(
            "llmgate_operator_managed_objects",
            "llmgate custom resources the operator manages, by kind.",
            ["kind"], registry=self.registry)
        self.namespaces = Gauge(
            "llmgate_operator_managed_namespaces",
            "Namespaces with at least one llmgate custom resource.",
            registry=self.registry)
        self.spend_polls = Counter(
            "llmgate_operator_spend_polls_total",
            "Reads of VirtualKey spend from Redis, by result (success, error).",
            ["result"], registry=self.registry)
        for result in ("success", "error"):
            self.spend_polls.labels(result=result)
        self.spend_store_up = Gauge(
            "llmgate_operator_spend_store_up",
            "1 if the last read of VirtualKey spend from Redis succeeded, else 0.",
            registry=self.registry)
        self.sidecar_pods = Gauge(
            "llmgate_operator_sidecar_pods",
            "Pods running the llmgate sidecar, by sidecar version (image tag): an upgrade is "
            "finished when only the new version is left.",
            ["version"], registry=self.registry)
        self._per_namespace: dict[str, Mapping[str, int]] = {}
        self._versions: set[str] = set()

    def spend_polled(self, result: str) -> None:
        self.spend_polls.labels(result=result).inc()
        self.spend_store_up.set(1 if result == "success" else 0)

    def sidecars(self, versions: Mapping[str, int]) -> None:
        """Pods by sidecar version over every namespace (a version gone is removed)."""
        for gone in self._versions - set(versions):
            self.sidecar_pods.remove(gone)
        for version, count in versions.items():
            self.sidecar_pods.labels(version=version).set(count)
        self._versions = set(versions)

    def compiled(self, seconds: float) -> None:
        """One `compile_namespace` call took `seconds` (the reconciler reports it)."""
        self.compile_duration.observe(seconds)

    def reconciled(self, namespace: str, result: str, seconds: float,
                   managed: Mapping[str, int]) -> None:
        self.reconciles.labels(result=result).inc()
        self.duration.observe(seconds)
        if any(managed.values()):
            self._per_namespace[namespace] = dict(managed)
        else:
            self._per_namespace.pop(namespace, None)
        totals: dict[str, int] = {kind: 0 for kind in managed}
        for counts in self._per_namespace.values():
            for kind, count in counts.items():
                totals[kind] = totals.get(kind, 0) + count
        for kind, count in totals.items():
            self.managed.labels(kind=kind).set(count)
        self.namespaces.set(len(self._per_namespace))


@dataclass
class Health:
    """Readiness gates: every named part must report ready before `/readyz` says so."""

    pending: set[str] = field(default_factory=set)

    def wait_for(self, part: str) -> None:
        self.pending.add(part)

    def ready(self, part: str) -> None:
        self.pending.discard(part)

    @property
    def is_ready(self) -> bool:
        return not self.pending


HEALTH_KEY = web.AppKey("health", Health)
REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)


def create_app(health: Health, registry: CollectorRegistry) -> web.Application:
    app = web.Application()
    app[HEALTH_KEY] = health
    app[REGISTRY_KEY] = registry
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    return app


async def start(health: Health, registry: CollectorRegistry, *, host: str,
                port: int) -> web.AppRunner:
    """Serve the ops endpoints on host:port; the caller cleans the runner up."""
    runner = web.AppRunner(create_app(health, registry), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("ops endpoints on http://%s:%s (/healthz, /readyz, /metrics)", host,
             runner.addresses[0][1])
    return runner


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    health = request.app[HEALTH_KEY]
    if health.is_ready:
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "starting", "waiting_for": sorted(health.pending)},
                             status=503)


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
