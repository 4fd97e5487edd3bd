"""`Emu`: kmock's Kubernetes emulator made faithful enough for kopf and the operator.

The plain `kmock.KubernetesEmulator` (0.8, pinned) has no resourceVersion/uid/generation,
loses watch events between the snapshot and the subscription, ignores `?resourceVersion=`,
does not default `metadata.namespace`, cannot do `generateName` and answers a failed JSON
patch `test` with 500. This subclass fixes those; it leans on kmock internals, hence the pin.
kmock also re-scans its whole request log on every request (quadratic: 5,000 requests take
minutes), so `Emu` keeps only the current request there and a compact record in `served`.
"""

from __future__ import annotations

import collections
import datetime
import itertools
import uuid
from collections.abc import AsyncIterator
from typing import Any

import attrs
import jsonpatch
import kmock
from kmock._internal import aiobus

ALL_VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}


@attrs.mutable(weakref_slot=True)
class RecordingBus(aiobus.Bus[Any]):
    """A bus that also keeps every event, so watches can resume from a resourceVersion."""

    history: list[Any] = attrs.field(factory=list)

    async def put(self, *items: Any) -> None:
        self.history.extend(items)
        await super().put(*items)


def _rv_of(event: Any) -> int:
    try:
        return int(event["object"]["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return 0


def _touches_spec(data: Any) -> bool:
    if isinstance(data, list):
        return any(str(op.get("path", "")).startswith("/spec") for op in data)
    return isinstance(data, dict) and "spec" in data


@attrs.frozen
class Served:
    """What one request asked for (method, resource path, namespace, name, query)."""

    method: str
    resource: str
    namespace: str | None
    name: str | None
    params: dict[str, str]


@attrs.define(kw_only=True)
class Emu(kmock.KubernetesEmulator):
    _versions: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1), init=False)
    _latest: int = attrs.field(default=0, init=False)
    served: list[Served] = attrs.field(factory=list, init=False)
    # Namespaces whose Secrets and ConfigMaps answer 403, as RBAC does where nothing is bound.
    locked: set[str] = attrs.field(factory=set, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._buses = collections.defaultdict(RecordingBus)

    def _bump(self) -> str:
        self._latest = next(self._versions)
        return str(self._latest)

    async def _handle(self, request: Any) -> Any:
        del self._requests[:-1]  # see the module docstring
        resource = request.resource
        self.served.append(Served(
            method=str(request.method.value), namespace=request.namespace, name=request.name,
            resource="" if resource is None else f"{resource.group}/{resource.version}/"
                                                 f"{resource.plural}".lstrip("/"),
            params=dict(request.params)))
        if (request.namespace in self.locked and resource is not None
                and resource.plural in ("secrets", "configmaps")):
            raise kmock.KubernetesError(status=403, reason="Forbidden",
                                        message=f"{resource.plural} is forbidden")
        if request.resource is not None:
            self._stamp(request)
        try:
            return await super()._handle(request)
        except (jsonpatch.JsonPatchConflict, jsonpatch.JsonPatchTestFailed) as exc:
            raise kmock.KubernetesError(status=422, reason="Invalid", message=str(exc)) from None

    def _stamp(self, request: Any) -> None:
        """Fill in what a real API server adds on create/update (before kmock stores it)."""
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            if request.namespace:
                meta.setdefault("namespace", request.namespace)
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", datetime.datetime.now(datetime.UTC)
                            .strftime("%Y-%m-%dT%H:%M:%SZ"))
            meta["generation"] = 1
            meta["resourceVersion"] = self._bump()
        elif request.action == kmock.action.UPDATE and request.name:
            self._stamp_update(request)
        elif request.action == kmock.action.DELETE and request.name:
            self._bump()

    def _stamp_update(self, request: Any) -> None:
        key = (request.resource, request.namespace, request.name)
        current = self.objects[key] if key in self.objects else None
        generation = None
        if (current is not None and not current.deleted and request.subresource != "status"
                and _touches_spec(request.data)):
            generation = int(current.get("metadata", {}).get("generation") or 0) + 1
        rv = self._bump()
        if isinstance(request.data, list):  # JSON patch: stamp after the user's operations
            request.data.append({"op": "add", "path": "/metadata/resourceVersion", "value": rv})
            if generation:
                request.data.append({"op": "add", "path": "/metadata/generation",
                                     "value": generation})
        elif isinstance(request.data, dict):  # merge patch
            meta = request.data.setdefault("metadata", {}) or {}
            request.data["metadata"] = meta
            meta["resourceVersion"] = rv
            if generation:
                meta["generation"] = generation

    async def _serve_list(self, request: Any) -> Any:
        result: Any = await super()._serve_list(request)
        result["metadata"]["resourceVersion"] = str(self._latest)
        return result

    async def _serve_watch(self, request: Any) -> AsyncIterator[Any]:
        yield b""  # send the headers now
        check = self._KubernetesEmulator__check  # type: ignore[attr-defined]
        bus: Any = self._buses[request.resource]
        since = request.params.get("resourceVersion")
        async with self._lock:  # subscribe before taking the snapshot: nothing falls between
            marker = await bus.mark()
            if since and since.isdigit() and since != "0":
                replay = [e for e in bus.history if _rv_of(e) > int(since)]
            else:
                objs = self._KubernetesEmulator__get_objs(  # type: ignore[attr-defined]
                    request, strict=False)
                replay = [{"type": "ADDED", "object": o.raw} for o in objs if not o.deleted]
        try:
            for event in [*replay]:
                if self._visible(check, request, event):
                    yield event
            async for event in marker:
                if self._visible(check, request, event):
                    yield event
        finally:
            await bus.unmark(marker)

    @staticmethod
    def _visible(check: Any, request: Any, event: Any) -> bool:
        meta = (event.get("object") or {}).get("metadata") or {}
        return bool(check(request, request.resource, meta.get("namespace"), meta.get("name"),
                          strict=False))


def declare(emulator: Any, crds: dict[str, str]) -> Any:
    """Built-in resources (namespaces, secrets, events, ...) plus the given CRDs.

    `crds` maps `group/version/plural` to the kind; all are namespaced with `status`.
    """
    emulator.resources.load_bundled()
    for path, kind in crds.items():
        emulator.resources[path] = kmock.ResourceInfo(
            kind=kind, singular=kind.lower(), namespaced=True, verbs=ALL_VERBS,
            subresources={"status"})
    return emulator
