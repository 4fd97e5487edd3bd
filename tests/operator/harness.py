"""Helpers for operator tests: run the real operator against `Emu`, poke and read the API.

`running_operator` runs `llmgate_operator.main.serve` (kopf, reconciler, ops port) in its
own thread and event loop, so stopping it never cancels the test's tasks (kopf cancels
every task created after it started in its loop); the emulator keeps serving from the
test's loop meanwhile. Reads go straight to the emulator's object store.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from llmgate_contract import (
    CONFIGMAP_NAME,
    CREDENTIALS_SECRET_NAME,
    Bundle,
    TornBundleError,
    read_bundle,
)
from llmgate_operator import api
from llmgate_operator.kube import Connection
from llmgate_operator.main import serve
from llmgate_operator.settings import OperatorSettings

from tests.conftest import free_port

CRDS = {f"{api.GROUP}/{api.VERSION}/{plural}": kind for kind, plural in api.PLURALS.items()}
PATIENCE = 20.0  # seconds before a wait gives up: a guard against hangs, not a timing claim


async def eventually(probe: Callable[[], Any], *, what: str,
                     patience: float = PATIENCE) -> Any:
    """Poll `probe` until it returns something truthy; fail with `what` if it never does."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    last_error: Exception | None = None
    while loop.time() < deadline:
        try:
            value = probe()
            if value:
                return value
        except (KeyError, AssertionError, ValueError, AttributeError, TypeError) as exc:
            last_error = exc
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what} (last error: {last_error!r})")


async def eventually_async(probe: Callable[[], Awaitable[Any]], *, what: str) -> Any:
    """`eventually` for a probe that must await (e.g. an HTTP GET)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PATIENCE
    while loop.time() < deadline:
        value = await probe()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


@contextlib.asynccontextmanager
async def running_operator(k8s: Any, **overrides: Any) -> AsyncIterator[OperatorSettings]:
    """The whole operator (webhook off unless asked) against the emulator `k8s`."""
    fields: dict[str, Any] = {"webhook_enabled": False, "ops_host": "127.0.0.1",
                              "ops_port": free_port(), "resync_seconds": 30.0}
    settings = OperatorSettings(**(fields | overrides))
    stop, ready = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(serve(settings, connection=Connection(str(k8s.url).rstrip("/")),
                              stop_flag=stop, ready_flag=ready))
        except BaseException as exc:  # reported by the test, not lost in the thread
            failures.append(exc)

    thread = threading.Thread(target=target, name="llmgate-operator", daemon=True)
    thread.start()
    try:
        await eventually(lambda: ready.is_set() or not thread.is_alive(), what="operator ready")
        assert not failures, failures
        yield settings
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, PATIENCE)
    assert not thread.is_alive(), "the operator did not stop"
    assert not failures, failures


# -- writing through the API ---------------------------------------------------------------

def cr_path(kind: str, namespace: str, name: str | None = None) -> str:
    path = f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{namespace}/{api.PLURALS[kind]}"
    return f"{path}/{name}" if name else path


async def _send(k8s: Any, method: str, path: str, body: Any = None,
                content_type: str = "application/json") -> dict[str, Any]:
    async with k8s.request(method, path, json=body,
                           headers={"Content-Type": content_type}) as response:
        assert response.status < 300, (method, path, response.status, await response.text())
        return dict(await response.json())


async def create(k8s: Any, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """POST a CR or a core object (Secret) into `namespace`."""
    body = dict(body)
    if body.get("kind") == "Secret":
        path = f"/api/v1/namespaces/{namespace}/secrets"
    else:
        path = cr_path(body["kind"], namespace)
    return await _send(k8s, "POST", path, body)


async def patch(k8s: Any, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
    return await _send(k8s, "PATCH", path, dict(body), "application/merge-patch+json")


async def delete(k8s: Any, path: str) -> None:
    await _send(k8s, "DELETE", path)


def secret_body(name: str, data: Mapping[str, str], **meta: Any) -> dict[str, Any]:
    """A Secret with base64 `data` (the emulator does not convert `stringData`)."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, **meta},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


# -- reading the emulator's store ----------------------------------------------------------

def stored(k8s: Any, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
    key = (k8s.resource(resource), namespace, name)
    if key not in k8s.objects or k8s.objects[key].deleted:
        return None
    return dict(k8s.objects[key].raw)


def must(k8s: Any, resource: str, namespace: str | None, name: str) -> dict[str, Any]:
    """Like `stored`, for objects the test knows exist."""
    obj = stored(k8s, resource, namespace, name)
    assert obj is not None, f"{resource} {namespace}/{name} does not exist"
    return obj


def decoded(secret: Mapping[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def bundle(k8s: Any, namespace: str) -> Bundle | None:
    """What a sidecar would load from the namespace's two objects (None: not there yet)."""
    cm = stored(k8s, "v1/configmaps", namespace, CONFIGMAP_NAME)
    secret = stored(k8s, "v1/secrets", namespace, CREDENTIALS_SECRET_NAME)
    if cm is None or secret is None:
        return None
    try:
        return read_bundle(cm.get("data") or {}, decoded(secret))
    except TornBundleError:
        return None  # mid-update: the sidecar would keep its last good config


def cr(k8s: Any, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    return stored(k8s, f"{api.GROUP}/{api.VERSION}/{api.PLURALS[kind]}", namespace, name)


def ready(k8s: Any, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """The Ready condition of a CR, once it has one."""
    body = cr(k8s, kind, namespace, name) or {}
    conditions = (body.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "Ready"), None)
