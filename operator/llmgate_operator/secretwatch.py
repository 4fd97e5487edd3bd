"""The Secrets the operator reads: only those its CRs name, read on demand, kept fresh by one
metadata-only watch per namespace that has llmgate CRs.

`reconcile` calls `SecretWatch.read(namespace, names)` with the names the namespace's CRs
reference (provider credentials, VirtualKey key Secrets) and `remember` after its own writes;
`handlers` sets `on_change` (reconcile that namespace) and calls `retain` with the namespaces
that still have CRs. No Secret outside `names` is decoded or kept, and no Secret of a namespace
without llmgate CRs is ever requested: memory grows with the Secrets llmgate uses, not with the
cluster (tests/operator/test_secret_memory.py). `read` raises `kube.Forbidden` when the
namespace grants the operator nothing; the watch retries and reports when access appears.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from llmgate_operator import keys, render
from llmgate_operator.kube import Forbidden, Kube, KubeError

log = logging.getLogger(__name__)
WATCH_SECONDS = 290  # the server ends each watch stream after this; the watch resumes
RETRY_SECONDS = 30.0  # after a failed list/watch (403 included)

Versions = dict[str, str | None]  # name -> resourceVersion (None: the Secret does not exist)
ABSENT = keys.SecretView(name="")  # read: the Secret does not exist


def view_of(secret: Mapping[str, Any]) -> keys.SecretView:
    """The `SecretView` of a Secret object as the API returns it."""
    meta = secret.get("metadata") or {}
    return keys.SecretView(
        name=meta.get("name", ""), data=render.decode_data(secret.get("data")),
        labels=dict(meta.get("labels") or {}), annotations=dict(meta.get("annotations") or {}),
        uid=meta.get("uid"), resource_version=meta.get("resourceVersion"))


class SecretWatch:
    """Per namespace: the wanted names, their versions from the watch, their decoded views."""

    def __init__(self, kube: Kube, *, retry_seconds: float = RETRY_SECONDS,
                 watch_seconds: int = WATCH_SECONDS) -> None:
        self._kube = kube
        self._retry = retry_seconds
        self._watch_seconds = watch_seconds
        self.on_change: Callable[[str], Awaitable[Any]] | None = None
        self._wanted: dict[str, frozenset[str]] = {}
        # Filled only while the namespace's watch is synced: then they are the truth.
        self._versions: dict[str, Versions] = {}
        self._views: dict[str, dict[str, keys.SecretView]] = {}
        self._watches: dict[str, asyncio.Task[None]] = {}
        self._notifications: set[asyncio.Task[Any]] = set()

    # -- what reconcile uses ------------------------------------------------------------------

    async def read(self, namespace: str, names: Iterable[str]) -> dict[str, keys.SecretView]:
        """The named Secrets that exist, decoded; from memory when the watch vouches for it."""
        wanted = frozenset(names)
        self._wanted[namespace] = wanted
        self._ensure_watch(namespace)
        views = self._views.setdefault(namespace, {})
        for gone in set(views) - wanted:
            del views[gone]
        found: dict[str, keys.SecretView] = {}
        for name in sorted(wanted):
            view = self._cached(namespace, name)
            if view is None:
                body = await self._kube.read_secret(namespace, name)  # Forbidden propagates
                view = view_of(body) if body is not None else ABSENT
                self._learn(namespace, name, view)
            if view is not ABSENT:
                found[name] = view
        return found

    def remember(self, namespace: str, view: keys.SecretView) -> None:
        """Our own write: the watch will report this version; nothing to read back."""
        versions = self._versions.get(namespace)
        if versions is not None and view.name in self._wanted.get(namespace, ()):
            versions[view.name] = view.resource_version
            self._views.setdefault(namespace, {})[view.name] = view

    def retain(self, namespaces: Iterable[str]) -> None:
        """Stop watching (and forget) every namespace not in `namespaces`."""
        keep = set(namespaces)
        for namespace in [ns for ns in self._watches if ns not in keep]:
            self._watches.pop(namespace).cancel()
            self._wanted.pop(namespace, None)
            self._unsync(namespace)

    def watched(self) -> set[str]:
        return set(self._watches)

    def kept(self) -> int:
        """How many decoded Secrets are held (all namespaces)."""
        return sum(len(views) for views in self._views.values())

    async def aclose(self) -> None:
        tasks = [*self._watches.values(), *self._notifications]
        self._watches.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- the cache ------------------------------------------------------------------------

    def _cached(self, namespace: str, name: str) -> keys.SecretView | None:
        """A view (or ABSENT) the watch vouches for; None: ask the API."""
        versions = self._versions.get(namespace)
        if versions is None or name not in versions:
            return None
        if versions[name] is None:
            return ABSENT
        view = self._views.get(namespace, {}).get(name)
        return view if view is not None and view.resource_version == versions[name] else None

    def _learn(self, namespace: str, name: str, view: keys.SecretView) -> None:
        versions = self._versions.get(namespace)
        if versions is None:
            return  # not synced: nothing vouches for what was read
        if name not in versions:  # an event that came meanwhile is newer than our read
            versions[name] = None if view is ABSENT else view.resource_version
        if view is not ABSENT:
            self._views.setdefault(namespace, {})[name] = view

    # -- the watch ------------------------------------------------------------------------

    def _ensure_watch(self, namespace: str) -> None:
        task = self._watches.get(namespace)
        if task is None or task.done():
            self._watches[namespace] = asyncio.create_task(
                self._watch(namespace), name=f"llmgate secrets {namespace}")

    def _notify(self, namespace: str) -> None:
        if self.on_change is None:
            return
        task = asyncio.ensure_future(self.on_change(namespace))
        self._notifications.add(task)
        task.add_done_callback(self._notifications.discard)

    def _unsync(self, namespace: str) -> None:
        self._versions.pop(namespace, None)
        self._views.pop(namespace, None)

    async def _watch(self, namespace: str) -> None:
        denied = False
        while True:
            try:
                since: str | None = None
                while True:
                    if since is None:  # first, or the version expired (410): list again
                        since = await self._sync(namespace, notify=denied)
                        denied = False
                    resumed = await self._follow(namespace, since)
                    if resumed == since:  # an empty stream: do not spin on a server that
                        await asyncio.sleep(1.0)  # ends watches at once
                    since = resumed
            except Forbidden as exc:
                if not denied:
                    log.warning("may not watch Secrets in namespace %s: %s", namespace, exc)
                    denied = True
                    self._notify(namespace)  # its CRs get to say AccessDenied
            except (KubeError, ValueError, KeyError, TypeError) as exc:
                log.warning("Secret watch in namespace %s failed, retrying: %s", namespace, exc)
            self._unsync(namespace)
            await asyncio.sleep(self._retry)

    async def _sync(self, namespace: str, *, notify: bool) -> str:
        """List names and versions; the wanted ones become the truth. Returns the list's rv."""
        listing = await self._kube.list_metadata(namespace, "secrets")
        present = {str((item.get("metadata") or {}).get("name")):
                   (item.get("metadata") or {}).get("resourceVersion")
                   for item in listing.get("items") or []}
        wanted = self._wanted.get(namespace, frozenset())
        fresh: Versions = {name: present.get(name) for name in wanted}
        before = self._versions.get(namespace)
        self._versions[namespace] = fresh
        if notify or (before is not None and before != fresh):
            self._notify(namespace)
        return str((listing.get("metadata") or {}).get("resourceVersion") or "")

    async def _follow(self, namespace: str, since: str) -> str | None:
        """One watch stream; returns where to resume, or None when the version expired."""
        async for event in self._kube.watch_metadata(namespace, "secrets", since,
                                                     timeout_seconds=self._watch_seconds):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    return None
                raise ValueError(f"watch error: {obj.get('message') or obj}")
            meta = obj.get("metadata") or {}
            since = str(meta.get("resourceVersion") or since)
            name = str(meta.get("name"))
            if kind == "BOOKMARK" or name not in self._wanted.get(namespace, ()):
                continue  # not ours to keep: nothing of it is stored
            versions = self._versions.setdefault(namespace, {})
            version = None if kind == "DELETED" else meta.get("resourceVersion")
            if versions.get(name, "") != version:
                versions[name] = version
                self._notify(namespace)
        return since
