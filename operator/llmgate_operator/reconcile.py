"""Level-based reconcile of one namespace: keys -> compile -> render -> write what changed.

`handlers` calls `Reconciler.reconcile(namespace, read_state)` on any change to a CR or a
referenced Secret, on a timer, and when VirtualKey spend read from Redis changed. Runs per
namespace are serialised, and triggers that arrive while one is queued share it. Secrets are
read through `secretwatch.SecretWatch` (only the referenced ones); a namespace that does not
let the operator read them gets `AccessDenied` on each CR. Writes go through `kube.Kube`
only; this module never imports kopf and never writes a CR's spec. Errors from the API
propagate as `KubeError`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from llmgate_contract import (
    CONFIGMAP_NAME,
    CREDENTIALS_SECRET_NAME,
    REDIS_PASSWORD_KEY,
    CompiledConfig,
)
from pydantic import ValidationError

from llmgate_operator import api, keys, render, rollout
from llmgate_operator.compile import Compilation, Condition, compile_namespace, secret_keys
from llmgate_operator.kube import Conflict, Forbidden, Kube, KubeError, NotFound
from llmgate_operator.secretwatch import SecretWatch, view_of
from llmgate_operator.spend import SpendTracker

log = logging.getLogger(__name__)

# Reasons that a later change (a Secret created, a provider fixed) can clear: retry later.
RETRY_REASONS = frozenset({
    "SecretNotFound", "SecretKeyNotFound", "SecretKeyEmpty", "KeySecretNotFound",
    "ProviderNotReady", "NoResolvedTargets", "DuplicateModel", "AccessDenied",
})
DEFAULT_GRANT_ROLE = "llmgate-namespace"
# Reasons only an edit of the CR itself can clear: the handler fails permanently.
PERMANENT_REASONS = frozenset({"InvalidSpec", "MissingCredentials"})


@dataclass(frozen=True)
class NamespaceState:
    """A consistent read of one namespace's CRs from the operator's indexes."""

    resources: tuple[Mapping[str, Any], ...] = ()


class Observer(Protocol):
    """Where reconcile outcomes go (Prometheus in production, nothing in unit tests)."""

    def reconciled(self, namespace: str, result: str, seconds: float,
                   managed: Mapping[str, int]) -> None: ...

    def compiled(self, seconds: float) -> None: ...

    def sidecars(self, versions: Mapping[str, int]) -> None:
        """Pods running the llmgate sidecar, by version, over every namespace."""


def referenced_secrets(resources: Iterable[Mapping[str, Any]]) -> set[str]:
    """Names of Secrets the CRs of a namespace read: a change to any other is irrelevant."""
    return {name for body in resources for name, _ in secret_keys(body)}


def _rv(meta: Mapping[str, Any] | None) -> int | None:
    try:
        return int((meta or {}).get("resourceVersion") or "")
    except ValueError:
        return None


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Reconciler:
    """Owns the per-namespace locks and a memory of its own recent writes."""

    def __init__(self, kube: Kube, *, observer: Observer | None = None,
                 clock: Callable[[], datetime] = _utcnow,
                 spend: SpendTracker | None = None, secrets: SecretWatch | None = None,
                 grant_role: str = DEFAULT_GRANT_ROLE,
                 sidecar_image: str | None = None,
                 redis_password: str | None = None) -> None:
        self.kube = kube
        # The only way Secrets are read: referenced names, on demand, watched per namespace.
        self.secrets = secrets if secrets is not None else SecretWatch(kube)
        self._grant_role = grant_role
        # Shared with every namespace's sidecars through its credentials Secret.
        self._extra_credentials = {REDIS_PASSWORD_KEY: redis_password} if redis_password \
            else {}
        # VirtualKey spend readings, shown in status by every run (see `handlers.spend_loop`).
        self.spend = spend if spend is not None else SpendTracker()
        self._observer = observer
        self._clock = clock
        self._locks: dict[str, asyncio.Lock] = {}
        self._queued: dict[str, asyncio.Future[Compilation]] = {}
        self._finished: dict[str, float] = {}
        # Our own writes, by (namespace, kind, name): (resourceVersion, what we wrote). The
        # indexes lag behind our writes; until they catch up, what we wrote is the truth.
        self._written: dict[tuple[str, str, str], tuple[int, Any]] = {}
        self._refusals: set[tuple[str, str, str]] = set()
        # The image the webhook injects into new pods, and what runs: see `sidecars`.
        self._sidecar_image = sidecar_image
        self._sidecars: dict[str, dict[str, int]] = {}
        self._reported_versions: dict[str, str] = {}
        # Pod events of one namespace run concurrently: one report at a time, from the latest
        # counts, so an older report can never land after a newer one.
        self._report_locks: dict[str, asyncio.Lock] = {}

    def seconds_since(self, namespace: str) -> float | None:
        """Seconds since the last successful reconcile of `namespace` (None: never)."""
        done = self._finished.get(namespace)
        return None if done is None else time.monotonic() - done

    async def reconcile(self, namespace: str, read: Callable[[], NamespaceState]) -> Compilation:
        """Bring `namespace` to its compiled state; joins a run that is already queued."""
        queued = self._queued.get(namespace)
        if queued is not None:
            return await asyncio.shield(queued)
        future: asyncio.Future[Compilation] = asyncio.get_running_loop().create_future()
        self._queued[namespace] = future
        try:
            async with self._locks.setdefault(namespace, asyncio.Lock()):
                # From here on the state is read afresh: later triggers need a new run.
                if self._queued.get(namespace) is future:
                    del self._queued[namespace]
                result = await self._timed(namespace, read)
        except BaseException as exc:
            if self._queued.get(namespace) is future:
                del self._queued[namespace]
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # retrieved: followers may be none
            raise
        future.set_result(result)
        return result

    async def _timed(self, namespace: str, read: Callable[[], NamespaceState]) -> Compilation:
        started = time.perf_counter()
        state = read()
        try:
            compilation = await self._run(namespace, state)
        except Exception:
            self._observe(namespace, "error", started, state)
            raise
        self._finished[namespace] = time.monotonic()
        self._observe(namespace, "success", started, state)
        return compilation

    def _observe(self, namespace: str, result: str, started: float,
                 state: NamespaceState) -> None:
        if self._observer is None:
            return
        managed: dict[str, int] = {kind: 0 for kind in api.SPEC_MODELS}
        for body in state.resources:
            managed[body["kind"]] = managed.get(body["kind"], 0) + 1
        self._observer.reconciled(namespace, result, time.perf_counter() - started, managed)

    async def _run(self, namespace: str, state: NamespaceState) -> Compilation:
        now = self._clock()
        try:
            return await self._compile_and_write(namespace, state, now)
        except Forbidden as exc:
            return await self._access_denied(namespace, state, exc, now)

    async def _compile_and_write(self, namespace: str, state: NamespaceState,
                                 now: datetime) -> Compilation:
        read = await self.secrets.read(namespace, referenced_secrets(state.resources))
        self._forget_gone(namespace, state, read)
        secrets = {name: self._fresh_secret(namespace, view) for name, view in read.items()}
        for body in state.resources:
            if body.get("kind") == "VirtualKey":
                await self._ensure_key(body, secrets, now)
        started = time.perf_counter()
        compilation = compile_namespace(
            namespace, state.resources, {n: v.data for n, v in secrets.items()}, now=now)
        if self._observer is not None:
            self._observer.compiled(time.perf_counter() - started)
        await self._write_config(compilation, has_resources=bool(state.resources))
        for body in state.resources:
            await self._write_status(compilation, body, now)
        return compilation

    # -- sidecar versions (docs/upgrade.md: finishing an upgrade) ----------------------------

    async def sidecars(self, namespace: str, images: Mapping[str, int]) -> None:
        """The sidecar images of `namespace`'s pods (image -> pods) changed: the metric, and
        when the set of versions changed, the annotation on its `llmgate-config` and an
        Event there (Warning while pods run another version than new pods get)."""
        counts = rollout.versions(images)
        if counts:
            self._sidecars[namespace] = counts
        else:
            self._sidecars.pop(namespace, None)
        if self._observer is not None:
            totals: dict[str, int] = {}
            for per_namespace in self._sidecars.values():
                for version, count in per_namespace.items():
                    totals[version] = totals.get(version, 0) + count
            self._observer.sidecars(totals)
        async with self._report_locks.setdefault(namespace, asyncio.Lock()):
            await self._report_versions(namespace)

    async def _report_versions(self, namespace: str) -> None:
        counts = self._sidecars.get(namespace, {})  # the latest, not this event's snapshot
        reported = ",".join(counts)
        if self._reported_versions.get(namespace) == reported:
            return
        configmap = await self.kube.read_object(namespace, "configmaps", CONFIGMAP_NAME)
        if configmap is None:
            return  # no llmgate CRs here: those pods are not ready and say why themselves
        annotations = (configmap.get("metadata") or {}).get("annotations") or {}
        if annotations.get(rollout.VERSIONS_ANNOTATION) != reported:  # else: before a restart
            await self.kube.patch_object(namespace, "configmaps", CONFIGMAP_NAME, {
                "metadata": {"annotations": {rollout.VERSIONS_ANNOTATION: reported or None}}})
            uniform, message = rollout.describe(counts, self._sidecar_image)
            await self._event(configmap, "Normal" if uniform else "Warning", "SidecarVersions",
                              message)
        self._reported_versions[namespace] = reported

    # -- our own writes vs. lagging indexes ---------------------------------------------------

    async def _access_denied(self, namespace: str, state: NamespaceState, exc: Forbidden,
                             now: datetime) -> Compilation:
        """RBAC keeps the namespace's Secrets from us: every CR says so, nothing is written."""
        message = (f"the operator may not manage Secrets and ConfigMaps in namespace "
                   f"{namespace!r} ({exc.reason}): bind ClusterRole {self._grant_role!r} to "
                   "the operator's service account with a RoleBinding in this namespace "
                   "(docs/security.md)")
        compilation = denied_compilation(namespace, state.resources, message)
        for body in state.resources:
            await self._write_status(compilation, body, now)
        return compilation

    def _forget_gone(self, namespace: str, state: NamespaceState,
                     secrets: Mapping[str, keys.SecretView]) -> None:
        alive = {(namespace, b["kind"], b["metadata"]["name"]) for b in state.resources}
        alive |= {(namespace, "Secret", name) for name in secrets}
        for key in [k for k in self._written if k[0] == namespace and k not in alive]:
            del self._written[key]

    def _remember(self, namespace: str, kind: str, name: str, result: Mapping[str, Any],
                  value: Any) -> None:
        rv = _rv(result.get("metadata"))
        if rv is not None:
            self._written[(namespace, kind, name)] = (rv, value)

    def _recent(self, namespace: str, kind: str, name: str,
                meta: Mapping[str, Any]) -> Any | None:
        """What we wrote, if the indexed copy (`meta`) is older than our write."""
        written = self._written.get((namespace, kind, name))
        if written is None:
            return None
        seen = _rv(meta)
        if seen is None or seen >= written[0]:
            del self._written[(namespace, kind, name)]  # the index caught up
            return None
        return written[1]

    def _fresh_secret(self, namespace: str, view: keys.SecretView) -> keys.SecretView:
        recent = self._recent(namespace, "Secret", view.name,
                              {"resourceVersion": view.resource_version})
        return recent if isinstance(recent, keys.SecretView) else view

    # -- VirtualKey key Secrets ---------------------------------------------------------------

    async def _ensure_key(self, body: Mapping[str, Any],
                          secrets: dict[str, keys.SecretView], now: datetime) -> None:
        try:
            spec = api.parse_spec("VirtualKey", body.get("spec"))
        except ValidationError:
            return  # compile reports InvalidSpec
        assert isinstance(spec, api.VirtualKeySpec)
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        secret_name = spec.secret_name or api.default_secret_name(name)
        # Read (or vouched for by the watch, which includes our own writes) this very run.
        view = secrets.get(secret_name)
        annotations = meta.get("annotations") or {}
        decision = keys.decide(annotations, view)
        if decision.refused:
            await self._report_refusal(body, decision.refused)
        if decision.action is keys.Action.KEEP:
            return
        if decision.action is keys.Action.ROTATE and view is not None:
            grace, warning = keys.rotation_grace(annotations)
            if warning:
                await self._event(body, "Warning", "InvalidRotationGrace", warning)
            data = keys.rotated_data(view.data, keys.generate_key(), now=now, grace=grace)
            rotation: str | None = annotations.get(keys.ROTATE_ANNOTATION, "").strip()
            reason = "KeyRotated"
            message = f"issued a new key; the old one works until {data['previous-not-after']}"
        else:
            data = keys.issued_data(view.data if view else None, keys.generate_key())
            rotation = annotations.get(keys.ROTATE_ANNOTATION, "").strip() or None
            reason = "KeyIssued"
            message = f"issued a key into Secret {secret_name!r}"
        adopt = view is None or view.managed
        desired = render.key_secret(body, secret_name, data, rotation=rotation, adopt=adopt)
        written = await self._write_key_secret(namespace, desired, view)
        if written is None:
            return
        secrets[secret_name] = written
        await self._event(body, "Normal", reason, message)

    async def _write_key_secret(self, namespace: str, desired: Mapping[str, Any],
                                view: keys.SecretView | None) -> keys.SecretView | None:
        name = desired["metadata"]["name"]
        if view is None:
            try:
                result = await self.kube.create_secret(namespace, desired)
            except Conflict:
                # It exists but was not indexed yet: use what is there, decide next time.
                current = await self.kube.read_secret(namespace, name)
                return view_of(current) if current else None
        else:
            current = await self.kube.read_secret(namespace, name)
            if current is None:
                return None  # deleted meanwhile: the next run issues a new one
            patch = render.object_patch(current, desired) or {}
            result = await self.kube.patch_object(namespace, "secrets", name, patch)
        written = view_of(result)
        self._remember(namespace, "Secret", name, result, written)
        self.secrets.remember(namespace, written)
        return written

    async def _report_refusal(self, body: Mapping[str, Any], message: str) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"], message)
        if key not in self._refusals:
            self._refusals.add(key)
            await self._event(body, "Warning", "RotationRefused", message)

    # -- the namespace's ConfigMap and Secret -------------------------------------------------

    async def _write_config(self, compilation: Compilation, *, has_resources: bool) -> bool:
        namespace = compilation.config.namespace
        configmap, secret = render.config_objects(compilation, self._extra_credentials)
        current_cm = await self.kube.read_object(namespace, "configmaps", CONFIGMAP_NAME)
        if current_cm is None and not has_resources:
            return False  # never had llmgate CRs: nothing to serve, nothing to clean up
        current_secret = await self.kube.read_object(namespace, "secrets", CREDENTIALS_SECRET_NAME)
        # Credentials first: a sidecar that sees the new config finds its files already there.
        wrote = await self._apply(namespace, "secrets", secret, current_secret)
        wrote = await self._apply(namespace, "configmaps", configmap, current_cm) or wrote
        if wrote:
            log.info("namespace %s: wrote config generation %s", namespace,
                     compilation.config.generation)
        return wrote

    async def _apply(self, namespace: str, plural: str, desired: Mapping[str, Any],
                     current: Mapping[str, Any] | None) -> bool:
        name = desired["metadata"]["name"]
        if current is None:
            try:
                await self.kube.create_object(namespace, plural, desired)
                return True
            except Conflict:
                current = await self.kube.read_object(namespace, plural, name)
                if current is None:
                    raise
        patch = render.object_patch(current, desired)
        if patch is None:
            return False
        await self.kube.patch_object(namespace, plural, name, patch)
        return True

    # -- status and Events ----------------------------------------------------------------

    async def _write_status(self, compilation: Compilation, body: Mapping[str, Any],
                            now: datetime) -> None:
        meta = body["metadata"]
        namespace, kind, name = meta["namespace"], body["kind"], meta["name"]
        recent = self._recent(namespace, kind, name, meta)
        current = recent if isinstance(recent, Mapping) else dict(body.get("status") or {})
        desired = render.desired_status(compilation, body, current, now=now,
                                        spend=self.spend.readings(namespace))
        patch = render.status_patch(current, desired)
        if patch is None:
            return
        try:
            result = await self.kube.patch_status(namespace, api.PLURALS[kind], name, patch)
        except NotFound:
            return  # deleted meanwhile; its DELETED event triggers another run
        after = {k: v for k, v in {**current, **{k: desired.get(k) for k in patch["status"]}}
                 .items() if v is not None}
        self._remember(namespace, kind, name, result, after)
        if render.ready_changed(current, desired):
            condition = compilation.conditions.get((kind, name))
            if condition is not None:
                await self._event(body, "Normal" if condition.ready else "Warning",
                                  condition.reason, condition.message)
        flip = render.budget_flip(current, desired)
        if flip is not None:
            await self._event(body, "Warning" if flip["status"] == "True" else "Normal",
                              flip["reason"], flip["message"])

    async def _event(self, body: Mapping[str, Any], type_: str, reason: str,
                     message: str) -> None:
        try:
            await self.kube.post_event(body, type_=type_, reason=reason, message=message,
                                       now=self._clock())
        except KubeError as exc:
            log.warning("could not post Event %s on %s/%s: %s", reason,
                        body["metadata"].get("namespace"), body["metadata"].get("name"), exc)


def denied_compilation(namespace: str, resources: Iterable[Mapping[str, Any]],
                       message: str) -> Compilation:
    """Nothing compiled: every CR of the namespace gets `AccessDenied` with `message`."""
    conditions = {(b["kind"], b["metadata"]["name"]): Condition(False, "AccessDenied", message)
                  for b in resources}
    return Compilation(config=CompiledConfig(namespace=namespace), credentials={},
                       conditions=conditions)
