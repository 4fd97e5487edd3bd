"""The aiohttp applications: the OpenAI-compatible API and the ops endpoints.

`create_app(settings, ...)` builds the API app (state in `web.AppKey`s, resources owned by
`cleanup_ctx`); `create_ops_app(api_app)` serves `/healthz`, `/readyz`, `/metrics` from the
same state. One middleware turns every `GatewayError` (and anything unexpected) into
the error envelope of the API called (the dialect of its endpoint: Anthropic's on
`/v1/messages`, else OpenAI's). Every endpoint of `api.endpoints.ENDPOINTS` is served by the
one request lifecycle (`api.lifecycle.serve`); the model list by `api.handlers`. This module
only wires.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from llmgate_contract import MIN_SCHEMA_VERSION, SCHEMA_VERSION

from llmgate_sidecar.api import handlers
from llmgate_sidecar.api.connection import ApiRunner
from llmgate_sidecar.api.endpoints import ENDPOINTS, dialect_for
from llmgate_sidecar.api.lifecycle import Endpoint, serve
from llmgate_sidecar.api.state import (
    ACCOUNTANT,
    CACHE,
    CONFIG,
    DRAINING,
    GUARDRAILS,
    METRICS,
    REQUEST_ID,
    ROUTER,
    SETTINGS,
    TRANSPORTS,
)
from llmgate_sidecar.cache.backends import CacheBackend, MemoryBackend
from llmgate_sidecar.cache.response import ResponseCache
from llmgate_sidecar.config.source import ConfigSource
from llmgate_sidecar.errors import GatewayError, NotFound, PayloadTooLarge
from llmgate_sidecar.observability.metrics import Metrics
from llmgate_sidecar.policy.accounting import Accountant
from llmgate_sidecar.policy.guardrails import Guardrails
from llmgate_sidecar.policy.limits import Limiter
from llmgate_sidecar.policy.store import MemoryStore, Store
from llmgate_sidecar.routing.router import Router
from llmgate_sidecar.settings import SidecarSettings
from llmgate_sidecar.upstream.transport import Transports

log = logging.getLogger("llmgate.sidecar")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Request ids only correlate lines and spans (nothing is authorised by one): 128 random bits
# from a generator seeded from the OS at start, without a getrandom call per request.
_ids = random.Random()


def new_request_id() -> str:
    return f"{_ids.getrandbits(128):032x}"


def error_response(exc: GatewayError, request_id: str, path: str = "") -> web.Response:
    """The error in the envelope of the API the client called (Anthropic's on /v1/messages)."""
    headers = {**exc.headers, "x-request-id": request_id}
    dialect = dialect_for(path)
    return web.Response(status=exc.status, body=orjson.dumps(dialect.envelope(exc)),
                        content_type="application/json", headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request.headers.get("x-request-id") or new_request_id()
    if len(request_id) > 128:
        request_id = new_request_id()
    request[REQUEST_ID] = request_id
    try:
        return await handler(request)
    except GatewayError as exc:
        request.app[METRICS].rejections.labels(_reason(exc)).inc()
        return error_response(exc, request_id, request.path)
    except web.HTTPRequestEntityTooLarge:
        exc2 = PayloadTooLarge(f"request body is larger than "
                               f"{request.app[SETTINGS].max_body_bytes} bytes")
        request.app[METRICS].rejections.labels("too_large").inc()
        return error_response(exc2, request_id, request.path)
    except web.HTTPNotFound:
        return error_response(NotFound(f"no such endpoint: {request.method} {request.path}",
                                       code="unknown_url"), request_id, request.path)
    except web.HTTPMethodNotAllowed:
        err = GatewayError(f"method {request.method} is not allowed on {request.path}",
                           code="method_not_allowed")
        err.status, err.type = 405, "invalid_request_error"
        return error_response(err, request_id, request.path)
    except Exception:
        log.exception("unhandled error", extra={"request_id": request_id})
        request.app[METRICS].rejections.labels("internal").inc()
        return error_response(GatewayError("internal gateway error", code="internal_error"),
                              request_id, request.path)


def _reason(exc: GatewayError) -> str:
    kind = getattr(exc, "kind", None)
    return f"{exc.reason}:{kind}" if kind else str(exc.reason or exc.status)


def create_store(settings: SidecarSettings) -> Store:
    """Redis when configured (shared by every replica), else in-memory for this process."""
    if settings.redis_url:
        # redis-py (and what it pulls in) is imported only when a URL is set (sidecar lean
        # imports: docs/performance.md, tests/sidecar/test_lean_imports.py).
        from llmgate_sidecar.policy.redis_store import RedisStore
        return RedisStore.from_url(settings.redis_url, password=settings.redis_password,
                                   fail_mode=settings.fail_mode)
    return MemoryStore()


def create_cache_backend(settings: SidecarSettings) -> CacheBackend:
    """Redis when configured (entries shared by every replica: `cache_redis_url`, else
    `redis_url`), else an in-process LRU."""
    url = settings.cache_redis_url or settings.redis_url
    if url:
        from llmgate_sidecar.cache.redis_backend import RedisBackend
        return RedisBackend.from_url(url, password=settings.redis_password)
    return MemoryBackend()


def create_app(settings: SidecarSettings, *, metrics: Metrics | None = None,
               router: Router | None = None, store: Store | None = None,
               poll_config: bool = True) -> web.Application:
    app = web.Application(middlewares=[error_middleware],
                          client_max_size=settings.max_body_bytes,
                          handler_args={"max_field_size": 16 * 1024, "max_line_size": 16 * 1024,
                                        "keepalive_timeout": settings.client_idle_timeout})
    app[SETTINGS] = settings
    app[METRICS] = metrics or Metrics()
    app[ROUTER] = router or Router(app[METRICS], bounds=settings.upstream_bounds())
    app[TRANSPORTS] = Transports(settings.upstream_bounds())
    store = store or create_store(settings)
    app[METRICS].watch_store(store)
    app[ACCOUNTANT] = Accountant(Limiter(store))
    app[CACHE] = ResponseCache(create_cache_backend(settings))
    app[GUARDRAILS] = Guardrails()
    app[DRAINING] = asyncio.Event()
    app[CONFIG] = ConfigSource(Path(settings.config_dir), Path(settings.credentials_dir),
                               app[TRANSPORTS], on_reload=app[METRICS].config_loaded,
                               interval=settings.reload_interval)
    app.cleanup_ctx.append(_transports_ctx)
    if poll_config:
        app.cleanup_ctx.append(_config_ctx)
    for endpoint in ENDPOINTS:
        app.router.add_post(endpoint.path, _handler(endpoint))
    app.router.add_get("/v1/models", handlers.list_models)
    app.router.add_get("/v1/models/{model}", handlers.get_model)
    return app


def _handler(endpoint: Endpoint[Any]) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await serve(request, endpoint)
    return handle


async def _transports_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[ACCOUNTANT].drain()
    await app[CACHE].aclose()
    await app[TRANSPORTS].close()
    app[GUARDRAILS].close()


async def _config_ctx(app: web.Application) -> AsyncIterator[None]:
    source = app[CONFIG]
    source.load()
    task = asyncio.create_task(source.watch(), name="llmgate-config-watch")
    yield
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


def api_runner(app: web.Application, *, shutdown_timeout: float) -> web.AppRunner:
    """The runner of the API app. Handlers are cancelled when their client disconnects, so a
    request still waiting for its upstream (retries, backoff, the first byte) stops at once
    and closes the upstream call instead of paying for an answer nobody will read. Clients
    that trickle their headers are cut off (`api.connection`)."""
    return ApiRunner(app, access_log=None, shutdown_timeout=shutdown_timeout,
                     handler_cancellation=True,
                     header_timeout=app[SETTINGS].client_header_timeout)


def create_ops_app(api: web.Application, *,
                   readiness: Callable[[], Mapping[str, Any]] | None = None) -> web.Application:
    """Health, readiness and metrics for kubelet and Prometheus, beside the API app.

    `readiness` adds fields to `/readyz` (`llmgate dev` reports its rejected input files)."""
    ops = web.Application()

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        # Ready: a config is loaded, the process is not draining after SIGTERM, and the
        # limit store can admit (failClosed with Redis down cannot).
        source = api[CONFIG]
        runtime = source.current
        draining = api[DRAINING].is_set()
        store_ready = await api[ACCOUNTANT].limiter.store.ready()
        ready = runtime is not None and not draining and store_ready
        body: dict[str, Any] = {"ready": ready,
                                "generation": runtime.generation if runtime else None,
                                "schemaVersion": source.schema_version,
                                "lastError": source.last_error, "draining": draining,
                                "storeReady": store_ready}
        if source.ignored:
            body["ignoredFields"] = list(source.ignored)
        if source.refused_schema is not None:
            # The operator is newer than this sidecar: the last good config keeps serving.
            body["refusedSchemaVersion"] = source.refused_schema
            body["readsSchemaVersions"] = [MIN_SCHEMA_VERSION, SCHEMA_VERSION]
        if readiness is not None:
            body |= readiness()
        return web.json_response(body, status=200 if ready else 503)

    async def metrics(_: web.Request) -> web.Response:
        output, content_type = api[METRICS].exposition()
        return web.Response(body=output, headers={"Content-Type": content_type})

    ops.router.add_get("/healthz", healthz)
    ops.router.add_get("/readyz", readyz)
    ops.router.add_get("/metrics", metrics)
    return ops
