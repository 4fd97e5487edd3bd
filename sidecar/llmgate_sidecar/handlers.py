"""Request handlers of the OpenAI-compatible API: `/v1/chat/completions` and `/v1/models`.

Each handler takes the current `Runtime` once, authenticates, resolves the route, asks
`routing` for a committed upstream answer and writes it (JSON, or SSE chunk by chunk). After
the first byte of a stream, an upstream failure ends the stream with an in-band error event,
never a clean-looking end. Errors are raised as `GatewayError`s for the app's middleware.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from llmgate_contract.config import Group, Route, VirtualKey

from llmgate_sidecar.accounting import FREE, reservation
from llmgate_sidecar.auth import allows, authenticate, check_model
from llmgate_sidecar.cache import CACHE_HEADER, HIT_HEADER, Hit, Recorder
from llmgate_sidecar.errors import BadRequest, NotFound, Unavailable, UpstreamError
from llmgate_sidecar.inbound import parse_chat
from llmgate_sidecar.metrics import RequestRecord, observed
from llmgate_sidecar.providers.base import Usage
from llmgate_sidecar.routing import Served
from llmgate_sidecar.runtime import Runtime
from llmgate_sidecar.sse import encode
from llmgate_sidecar.state import (
    ACCOUNTANT,
    CACHE,
    CONFIG,
    GUARDRAILS,
    METRICS,
    REQUEST_ID,
    ROUTER,
    SETTINGS,
    STREAM_RESPONSE,
)
from llmgate_sidecar.streams import StreamInterrupted

log = logging.getLogger("llmgate.request")
METADATA_HEADER = "x-llmgate-metadata"


def current_runtime(request: web.Request) -> Runtime:
    runtime = request.app[CONFIG].current
    if runtime is None:
        raise Unavailable("no llmgate config is loaded yet (is the llmgate-config ConfigMap "
                          "mounted and complete?)", code="config_not_loaded")
    return runtime


def caller(request: web.Request, runtime: Runtime) -> VirtualKey:
    return authenticate(runtime, request.headers, peer=request.remote,
                        bound_key=request.app[SETTINGS].virtual_key, now=datetime.now(UTC))


def request_metadata(headers: Mapping[str, str]) -> dict[str, str]:
    raw = headers.get(METADATA_HEADER)
    if not raw:
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest(f"{METADATA_HEADER} must be a JSON object", param=METADATA_HEADER,
                         code="invalid_metadata") from None
    if not isinstance(value, dict):
        raise BadRequest(f"{METADATA_HEADER} must be a JSON object", param=METADATA_HEADER,
                         code="invalid_metadata")
    return {str(k): str(v) for k, v in value.items()}


def select_group(route: Route, headers: Mapping[str, str], metadata: Mapping[str, str],
                 key_name: str) -> Group:
    """The first rule whose every condition matches picks the targets; else the route's."""
    for rule in route.rules:
        match = rule.match
        if match.virtual_keys and key_name not in match.virtual_keys:
            continue
        if any(headers.get(k) != v for k, v in match.headers.items()):
            continue
        if any(metadata.get(k) != v for k, v in match.metadata.items()):
            continue
        return rule.group
    return route.group


async def chat_completions(request: web.Request) -> web.StreamResponse:
    app = request.app
    metrics, accountant = app[METRICS], app[ACCOUNTANT]
    with observed(metrics, RequestRecord(request[REQUEST_ID]), request.headers) as record:
        runtime = current_runtime(request)
        chat = parse_chat(await request.read())
        record.stream = chat.stream
        policy = caller(request, runtime)
        record.virtual_key = policy.name
        route = runtime.routes_by_model.get(chat.model)
        if route is None:
            raise NotFound(f"the model {chat.model!r} does not exist or is not served here")
        record.route = route.name
        check_model(policy, chat.model, route.model)
        metadata = request_metadata(request.headers)
        group = select_group(route, request.headers, metadata, policy.name)
        rails = app[GUARDRAILS].for_route(route)
        body = rails.apply(chat.body) if rails is not None else chat.body
        plan = app[CACHE].plan(route, body, namespace=runtime.namespace, key_name=policy.name,
                               metadata=metadata, headers=request.headers, group=group)
        hit = await app[CACHE].lookup(plan, stream=chat.stream)
        if plan.read or plan.header == "refresh":
            metrics.cache.labels(route.name, "hit" if hit else plan.header).inc()
        elif plan.header == "bypass":
            metrics.cache.labels(route.name, "bypass").inc()
        # A cache hit costs nothing: it still counts as a request, reserves no money.
        planned = FREE if hit else reservation(runtime, route, group, body)
        ticket = await accountant.admit(runtime, policy, planned, metrics)
        metrics.in_flight.inc()
        served, usage = None, None
        try:
            if hit is not None:
                usage = hit.usage
                record.provider = record.model = "cache"
                record.answered("2xx", usage, time.perf_counter() - record.started)
                return await reply_from_cache(request, route, hit, chat.stream,
                                              chat.include_usage)
            served = await app[ROUTER].serve(runtime, route, body, stream=chat.stream,
                                             include_usage=chat.include_usage,
                                             group_override=group)
            record.served(served)
            headers = response_headers(request, route, served)
            headers[CACHE_HEADER] = plan.header
            if served.stream is None:
                assert served.payload is not None
                overhead = time.perf_counter() - record.started - served.upstream_seconds
                headers["x-llmgate-overhead-ms"] = f"{overhead * 1000:.3f}"
                metrics.overhead.labels("false").observe(overhead)
                usage = served.usage
                record_usage(metrics, route, served, policy, usage)
                record.answered("2xx", usage, overhead)
                await app[CACHE].store_json(plan, served.payload)
                return web.Response(body=served.payload, content_type="application/json",
                                    headers=headers)
            status_class, usage = await stream_out(request, route, served, policy, headers,
                                                   record.started, app[CACHE].recorder(plan))
            record.answered(status_class, usage, headers.get("x-llmgate-overhead-ms"))
            return request[STREAM_RESPONSE]
        finally:
            metrics.in_flight.dec()
            record.cost_usd = accountant.settle_later(
                ticket, planned, runtime, served.target if served else None, usage,
                metrics=metrics, route=route.name, policy=policy)


def response_headers(request: web.Request, route: Route, served: Served) -> dict[str, str]:
    return {"x-request-id": request[REQUEST_ID], "x-llmgate-route": route.name,
            "x-llmgate-provider": served.target.provider,
            "x-llmgate-model": served.target.model,
            "x-llmgate-attempts": str(served.attempts), CACHE_HEADER: "off"}


async def reply_from_cache(request: web.Request, route: Route, hit: Hit, stream: bool,
                           include_usage: bool) -> web.StreamResponse:
    """Answer from the cache: the stored JSON, or the recorded stream replayed as it was."""
    headers = {"x-request-id": request[REQUEST_ID], "x-llmgate-route": route.name,
               "x-llmgate-provider": "cache", "x-llmgate-model": hit.model,
               "x-llmgate-attempts": "0", CACHE_HEADER: HIT_HEADER}
    if not stream:
        return web.Response(body=hit.entry.body, content_type="application/json",
                            headers=headers)
    response = web.StreamResponse(status=200, headers={
        **headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    for event in hit.sse(include_usage=include_usage):
        await response.write(event)
    await response.write_eof()
    return response


def record_usage(metrics: Any, route: Route, served: Served, policy: VirtualKey,
                 usage: Usage | None) -> None:
    if usage is None or not usage.known:
        return
    labels = (route.name, served.target.provider, served.target.model, policy.name)
    metrics.tokens.labels(*labels, "input").inc(usage.prompt_tokens)
    metrics.tokens.labels(*labels, "output").inc(usage.completion_tokens)


async def stream_out(request: web.Request, route: Route, served: Served, policy: VirtualKey,
                     headers: dict[str, str], started: float,
                     recorder: Recorder | None = None) -> tuple[str, Usage | None]:
    """Write the committed stream; returns the status class and the usage learnt.

    After the first byte nothing can fall back: an upstream failure (or a shutdown whose
    grace ran out) ends the stream with an in-band error event and no `[DONE]`; a client
    that goes away closes the upstream promptly (see streams.CommittedStream)."""
    metrics = request.app[METRICS]
    stream = served.stream
    assert stream is not None
    overhead = time.perf_counter() - started - served.upstream_seconds
    headers["x-llmgate-overhead-ms"] = f"{overhead * 1000:.3f}"
    metrics.overhead.labels("true").observe(overhead)
    response = web.StreamResponse(status=200, headers={
        **headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no"})
    request[STREAM_RESPONSE] = response
    usage: Usage | None = None
    first, error = True, None
    try:
        await response.prepare(request)
        stream.stop_when(lambda: request.transport is None or request.transport.is_closing())
        async for item in stream:
            if recorder is not None:
                recorder.feed(item)
            if item.downstream:
                await response.write(item.downstream)
                if first:
                    metrics.ttft.labels(route.name, served.target.provider).observe(
                        time.perf_counter() - started)
                    first = False
            if item.usage is not None:
                usage = item.usage
        await response.write_eof()
        if recorder is not None:
            await recorder.finish()  # stores only a complete stream; never raises
        return "2xx", usage
    except UpstreamError as exc:
        metrics.stream_errors.labels(route.name, exc.error_class).inc()
        metrics.upstream_errors.labels(served.target.provider, exc.error_class).inc()
        error = ("upstream_error", exc.error_class, f"upstream failed mid-stream: {exc.message}")
        return "5xx", usage
    except (ConnectionResetError, ConnectionError):
        metrics.stream_errors.labels(route.name, "clientDisconnected").inc()
        return "499", usage
    except StreamInterrupted:
        metrics.stream_errors.labels(route.name, "shutdown").inc()
        error = ("server_error", "shutdown", "the gateway is shutting down; stream cut short")
        return "5xx", usage
    except asyncio.CancelledError:
        metrics.stream_errors.labels(route.name, "cancelled").inc()
        error = ("server_error", "shutdown", "the gateway is shutting down; stream cut short")
        raise
    except Exception:
        log.exception("stream failed", extra={"request_id": request.get(REQUEST_ID)})
        metrics.stream_errors.labels(route.name, "internal").inc()
        error = ("server_error", "internal_error", "internal gateway error mid-stream")
        return "5xx", usage
    finally:
        await stream.aclose()
        record_usage(metrics, route, served, policy, usage)
        if error is not None and response.prepared:
            # Committed already: tell the client in-band so no SDK mistakes this for success.
            await _write_quietly(response, encode({"error": {
                "type": error[0], "code": error[1], "message": error[2], "param": None}}))


async def _write_quietly(response: web.StreamResponse, data: bytes) -> None:
    try:
        await response.write(data)
        await response.write_eof()
    except (ConnectionResetError, ConnectionError):
        pass


def _model_entry(name: str, runtime: Runtime) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": int(runtime.loaded_at.timestamp()),
            "owned_by": f"llmgate/{runtime.namespace}"}


async def list_models(request: web.Request) -> web.Response:
    runtime = current_runtime(request)
    policy = caller(request, runtime)
    names = sorted(name for name, route in runtime.routes_by_model.items()
                   if allows(policy, name, route.model))
    return web.json_response({"object": "list",
                              "data": [_model_entry(n, runtime) for n in names]},
                             dumps=lambda v: orjson.dumps(v).decode())


async def get_model(request: web.Request) -> web.Response:
    runtime = current_runtime(request)
    policy = caller(request, runtime)
    name = request.match_info["model"]
    route = runtime.routes_by_model.get(name)
    if route is None or not allows(policy, name, route.model):
        raise NotFound(f"the model {name!r} does not exist or is not served here")
    return web.json_response(_model_entry(name, runtime))
