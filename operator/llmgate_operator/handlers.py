"""The kopf wiring, and the only module that imports kopf: indexes, triggers, errors.

`main` calls `run_operator(runtime, ...)`; handlers are registered into a fresh registry
per run (`build_registry`), so settings such as the resync interval are plain arguments.
Every handler is thin: it reads the namespace from the indexes and hands it to
`reconcile.Reconciler`; API errors become `TemporaryError`, invalid specs `PermanentError`.
Handlers never write a CR's spec (kopf itself keeps its bookkeeping in annotations). kopf
watches only llmgate's CRs: Secrets are the reconciler's `SecretWatch` (referenced ones only,
per namespace), so no cluster-wide Secret access is needed or held in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import logging
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import kopf

from llmgate_operator import api, peering, rollout
from llmgate_operator.kube import Connection, Forbidden, KubeError
from llmgate_operator.reconcile import (
    PERMANENT_REASONS,
    RETRY_REASONS,
    NamespaceState,
    Reconciler,
)

CR_INDEXES = {kind: f"{kind.lower()}_index" for kind in api.PLURALS}
SIDECAR_INDEX = "sidecar_index"
log = logging.getLogger(__name__)


@dataclass
class Live:
    """What kopf hands out only at run time: its live indexes, and proof they are filled."""

    indexes: dict[str, Any] = field(default_factory=dict)
    # kopf runs resource handlers only once every index has its initial listing; so the first
    # handler call proves the indexes complete (an empty index then means: no CRs at all).
    indexed: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True)
class OperatorRuntime:
    """What the handlers share; reaches them through kopf's `memo`."""

    reconciler: Reconciler
    connection: Connection | None = None
    """An explicit API server (tests, dev); None: in-cluster service account or kubeconfig."""
    namespaces: tuple[str, ...] = ()
    resync_seconds: float = 60.0
    retry_seconds: float = 30.0
    spend_seconds: float = 30.0
    """How often VirtualKey spend is read from Redis (when the reconciler has a reader)."""
    peering: str | None = None
    identity: str = field(default_factory=lambda: f"llmgate-{uuid.uuid4().hex[:12]}")
    """This replica's name in the peering object (the pod name when running in a pod)."""
    priority: int = field(default_factory=lambda: peering.start_priority(datetime.now(UTC)))
    """Its peering priority: the earliest started replica leads (see `peering`)."""
    live: Live = field(default_factory=Live)


# -- indexes ---------------------------------------------------------------------------------

def index_resource(namespace: str | None, body: kopf.Body, **_: Any) -> dict[str | None, Any]:
    """One CR, as a plain dict, under its namespace."""
    return {namespace: copy.deepcopy(dict(body))}


def has_sidecar(body: kopf.Body, **_: Any) -> bool:
    return rollout.sidecar_image(body) is not None


def index_sidecar(namespace: str | None, body: kopf.Body, **_: Any) -> dict[str | None, Any]:
    """A pod carrying the llmgate sidecar, as its sidecar image, under its namespace."""
    return {namespace: rollout.sidecar_image(body)}


def _reader(namespace: str, kwargs: Mapping[str, Any]) -> Callable[[], NamespaceState]:
    def read() -> NamespaceState:
        return NamespaceState(resources=tuple(body for index in CR_INDEXES.values()
                                              for body in kwargs[index].get(namespace, ())))
    return read


def _namespaced(namespace: str | None) -> str:
    if not namespace:  # the CRDs are namespaced; kopf passes None only for cluster objects
        raise kopf.PermanentError("llmgate resources are namespaced")
    return namespace


def _runtime(memo: Any) -> OperatorRuntime:
    runtime = memo.runtime
    assert isinstance(runtime, OperatorRuntime)
    return runtime


# -- activities ------------------------------------------------------------------------------

def configure(settings: kopf.OperatorSettings, memo: Any, **kwargs: Any) -> None:
    runtime = _runtime(memo)
    # Startup handlers get the (still empty) live indexes; the resync loop reads them later.
    runtime.live.indexes.update(
        {name: kwargs[name] for name in (*CR_INDEXES.values(), SIDECAR_INDEX)})
    # kopf's bookkeeping in llmgate.io annotations: `status` stays ours and kstatus-clean.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="llmgate.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="llmgate.io", key="last-handled-configuration")
    # The reconciler posts Events with actionable reasons; kopf's would only repeat them.
    settings.posting.enabled = False
    # Namespace scanning (globs) needs list on namespaces; names given are used as they are.
    settings.scanning.disabled = bool(runtime.namespaces)
    # Level-based: a reconcile cut short at shutdown is redone whole at the next start.
    settings.queueing.exit_timeout = 0.5
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.peering.standalone = runtime.peering is None


async def cleanup(memo: Any, **_: Any) -> None:
    """Secret watches end with kopf's root tasks (not 5 s later as 'hung' tasks)."""
    await _runtime(memo).reconciler.secrets.aclose()


def login(memo: Any, logger: kopf.Logger, settings: kopf.OperatorSettings,
          **_: Any) -> kopf.ConnectionInfo | None:
    connection = _runtime(memo).connection
    if connection is None:
        return kopf.login_via_client(logger=logger, settings=settings)
    return kopf.ConnectionInfo(
        server=connection.server, token=connection.token,
        scheme="Bearer" if connection.token else None,
        insecure=connection.insecure or None, ca_path=connection.ca_path,
        default_namespace="default")


# -- triggers --------------------------------------------------------------------------------

async def _reconcile(namespace: str, memo: Any, kwargs: Mapping[str, Any]) -> Any:
    runtime = _runtime(memo)
    try:
        return await runtime.reconciler.reconcile(namespace, _reader(namespace, kwargs))
    except KubeError as exc:
        raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=runtime.retry_seconds) \
            from exc


async def resource_changed(namespace: str | None, name: str, body: kopf.Body, memo: Any,
                           **kwargs: Any) -> None:
    """Created, resumed or changed CR: reconcile its namespace, then judge this CR."""
    _runtime(memo).live.indexed.set()
    compilation = await _reconcile(_namespaced(namespace), memo, kwargs)
    condition = compilation.conditions.get((body["kind"], name))
    if condition is None:
        return
    if condition.reason in PERMANENT_REASONS:
        raise kopf.PermanentError(f"{condition.reason}: {condition.message}")
    if condition.reason in RETRY_REASONS:
        raise kopf.TemporaryError(f"{condition.reason}: {condition.message}",
                                  delay=_runtime(memo).retry_seconds)


async def resource_event(type: str, namespace: str | None, memo: Any, logger: kopf.Logger,
                         **kwargs: Any) -> None:
    """A deleted CR leaves the compiled config (level-based: recompile what is left)."""
    _runtime(memo).live.indexed.set()
    if type == "DELETED":
        await _quietly(_namespaced(namespace), memo, logger, kwargs)


async def secret_changed(runtime: OperatorRuntime, namespace: str) -> None:
    """A Secret that some CR of `namespace` reads changed (or came, or went, or access did)."""
    await _quietly(namespace, kopf.Memo(runtime=runtime), log, runtime.live.indexes)


async def sidecar_event(namespace: str | None, memo: Any, logger: kopf.Logger,
                        **kwargs: Any) -> None:
    """A pod with the llmgate sidecar came, changed or went: report the namespace's versions."""
    if not namespace:
        return
    images: dict[str, int] = {}
    for image in kwargs[SIDECAR_INDEX].get(namespace, ()):
        images[image] = images.get(image, 0) + 1
    try:
        await _runtime(memo).reconciler.sidecars(namespace, images)
    except KubeError as exc:  # best effort: the next pod event or restart reports again
        logger.warning("could not report sidecar versions of namespace %s: %s", namespace, exc)


async def _quietly(namespace: str, memo: Any, logger: Any,
                   kwargs: Mapping[str, Any]) -> None:
    # Event handlers are not retried by kopf; the resync loop and CR handlers catch up.
    try:
        await _reconcile(namespace, memo, kwargs)
    except kopf.TemporaryError as exc:
        logger.warning("reconcile of namespace %s failed, will retry: %s", namespace, exc)


async def resync_loop(runtime: OperatorRuntime) -> None:
    """Periodic reconcile of every known namespace: keys expire and rotation grace periods
    end without any event. (kopf timers would put a finalizer on every CR; this does not.)"""
    # Configs whose CRs were all deleted while no operator ran: no CR event ever comes for
    # them (nor, with no CRs anywhere, does kopf ever prove its indexes filled), so they are
    # checked against the API directly and emptied.
    for namespace in sorted(await _orphaned_configs(runtime)):
        await _empty_orphan(runtime, namespace)
    await runtime.live.indexed.wait()
    memo = kopf.Memo(runtime=runtime)
    while True:
        indexes = runtime.live.indexes
        namespaces = {ns for name in CR_INDEXES.values() for ns in indexes[name]
                      if any(indexes[name].get(ns, ()))}
        # Secret watches end with a namespace's last CR (the watch is started by a read).
        runtime.reconciler.secrets.retain(namespaces)
        for namespace in sorted(namespaces):
            if not await _active(runtime, namespace):
                continue  # another replica leads; kopf paused this one's watches too
            since = runtime.reconciler.seconds_since(namespace)
            if since is not None and since < runtime.resync_seconds * 0.9:
                continue  # an event reconciled it recently enough
            try:
                await _quietly(namespace, memo, log, indexes)
            except Exception:  # a bug must not end resyncing for every other namespace
                log.exception("resync of namespace %s failed", namespace)
        await asyncio.sleep(runtime.resync_seconds)


async def spend_loop(runtime: OperatorRuntime) -> None:
    """Read every budgeted VirtualKey's spend from Redis each `spend_seconds`, and reconcile
    the namespaces where it changed (their status shows it; nothing else is rewritten)."""
    tracker = runtime.reconciler.spend
    if not tracker.enabled:
        return
    await runtime.live.indexed.wait()
    memo = kopf.Memo(runtime=runtime)
    while True:
        indexes = runtime.live.indexes
        # No await while the index is walked: kopf updates it from the same loop.
        bodies = [body for store in indexes[CR_INDEXES["VirtualKey"]].values()
                  for body in store]
        try:
            for namespace in sorted(await tracker.poll(bodies)):
                if await _active(runtime, namespace):
                    await _quietly(namespace, memo, log, indexes)
        except Exception:  # a bug must not end spend status for good
            log.exception("spend status update failed")
        await asyncio.sleep(runtime.spend_seconds)


async def _active(runtime: OperatorRuntime, namespace: str) -> bool:
    """Whether this replica leads for `namespace` (always, without peering)."""
    if runtime.peering is None:
        return True
    scope = namespace if runtime.namespaces else None
    try:
        body = await runtime.reconciler.kube.read_peering(runtime.peering, scope)
    except KubeError as exc:
        log.warning("cannot read peering %s: %s; leaving the work to the leader",
                    runtime.peering, exc)
        return False
    if body is None:
        return True  # no peering object: kopf runs every replica (and warns about it)
    return peering.leads(body.get("status"), runtime.identity, runtime.priority,
                         now=datetime.now(UTC))


async def _orphaned_configs(runtime: OperatorRuntime) -> set[str]:
    """Namespaces with a llmgate config (some may have lost their CRs while we were down)."""
    try:
        found = await runtime.reconciler.kube.namespaces_with_config(runtime.namespaces)
    except Forbidden:
        # Least privilege: ConfigMaps are granted per namespace, not listable cluster-wide.
        log.info("ConfigMaps are not listable cluster-wide: a config whose CRs were deleted "
                 "while the operator was down stays until its namespace has CRs again")
        return set()
    except KubeError as exc:
        log.warning("cannot list llmgate configs: %s", exc)
        return set()
    return found


async def _empty_orphan(runtime: OperatorRuntime, namespace: str) -> None:
    kube = runtime.reconciler.kube
    try:
        if await kube.has_resources(namespace, api.GROUP, api.VERSION, api.PLURALS.values()):
            return  # not an orphan: kopf's events reconcile it
        await runtime.reconciler.reconcile(namespace, NamespaceState)
    except KubeError as exc:
        log.warning("cannot empty the left-over config of namespace %s: %s", namespace, exc)


# -- registry and run ------------------------------------------------------------------------

def build_registry(runtime: OperatorRuntime) -> kopf.OperatorRegistry:
    """All handlers, registered into a fresh registry."""
    registry = kopf.OperatorRegistry()
    kopf.on.startup(registry=registry)(configure)
    kopf.on.login(registry=registry)(login)
    kopf.on.cleanup(registry=registry)(cleanup)
    for kind, plural in api.PLURALS.items():
        resource = (api.GROUP, api.VERSION, plural)
        kopf.index(*resource, id=CR_INDEXES[kind], registry=registry)(index_resource)
        for on in (kopf.on.resume, kopf.on.create, kopf.on.update):
            on(*resource, id="reconcile", registry=registry)(resource_changed)
        kopf.on.event(*resource, id="deleted", registry=registry)(resource_event)
    kopf.index("v1", "pods", id=SIDECAR_INDEX, when=has_sidecar,
               registry=registry)(index_sidecar)
    kopf.on.event("v1", "pods", id="sidecar", when=has_sidecar,
                  registry=registry)(sidecar_event)
    return registry


async def run_operator(runtime: OperatorRuntime, *, stop_flag: Any = None,
                       ready_flag: Any = None) -> None:
    """Run kopf until `stop_flag` (or a signal); clusterwide unless namespaces are given."""
    namespaces: Collection[str] = runtime.namespaces
    secrets = runtime.reconciler.secrets
    secrets.on_change = functools.partial(secret_changed, runtime)
    loops = [asyncio.create_task(resync_loop(runtime), name="llmgate resync"),
             asyncio.create_task(spend_loop(runtime), name="llmgate spend")]
    try:
        await kopf.operator(
            registry=build_registry(runtime), memo=kopf.Memo(runtime=runtime),
            clusterwide=not namespaces, namespaces=list(namespaces),
            standalone=runtime.peering is None, peering_name=runtime.peering,
            identity=cast(Any, runtime.identity), priority=runtime.priority,
            stop_flag=stop_flag, ready_flag=ready_flag)
    finally:
        for task in loops:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await secrets.aclose()

