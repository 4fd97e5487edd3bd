"""The one chat pipeline behind every chat-shaped inbound API, and the shared request front.

`front` does what every model-addressed endpoint needs first: the loaded config, the caller's
virtual key, the route named by `model`, the model allow-list, the request metadata and the
rule-selected target group. `serve_chat` then runs guardrails, the response cache,
limits/budget reservation and settlement, routing, metrics and the log record, and writes
the answer through the request's `Dialect` (OpenAI chat completions, Anthropic Messages).
Called by `handlers`; never parses a dialect's own request shape.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from llmgate_contract.config import Group, Route, VirtualKey

from llmgate_sidecar.api.dialects import Dialect
from llmgate_sidecar.api.inbound import ChatRequest
from llmgate_sidecar.api.replies import record_usage, reply_from_cache, response_headers, stream_out
from llmgate_sidecar.api.state import (
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
from llmgate_sidecar.cache.response import CACHE_HEADER, Hit, Plan
from llmgate_sidecar.config.runtime import Runtime
from llmgate_sidecar.errors import BadRequest, NotFound, Unavailable
from llmgate_sidecar.observability.observe import observed
from llmgate_sidecar.observability.record import RequestRecord
from llmgate_sidecar.policy.accounting import FREE, reservation
from llmgate_sidecar.policy.auth import authenticate, check_model

METADATA_HEADER = "x-llmgate-metadata"
# Turns an inbound API's raw body into the OpenAI-shaped request the pipeline runs on.
ChatParser = Callable[[bytes], ChatRequest]


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


@dataclass(frozen=True, slots=True)
class Front:
    """Who asks, for which route, with which targets: settled before any upstream work."""

    runtime: Runtime
    policy: VirtualKey
    route: Route
    metadata: dict[str, str]
    group: Group


def front(request: web.Request, record: RequestRecord, model: str, *,
          runtime: Runtime | None = None) -> Front:
    runtime = runtime or current_runtime(request)
    policy = caller(request, runtime)
    record.virtual_key = policy.name
    route = runtime.routes_by_model.get(model)
    if route is None:
        raise NotFound(f"the model {model!r} does not exist or is not served here")
    record.route = route.name
    check_model(policy, model, route.model)
    metadata = request_metadata(request.headers)
    group = select_group(route, request.headers, metadata, policy.name)
    return Front(runtime, policy, route, metadata, group)


async def _cache_lookup(request: web.Request, f: Front, body: dict[str, Any], stream: bool,
                        api: str) -> tuple[Plan, Hit | None]:
    cache, metrics = request.app[CACHE], request.app[METRICS]
    plan = cache.plan(f.route, body, namespace=f.runtime.namespace, key_name=f.policy.name,
                      metadata=f.metadata, headers=request.headers, group=f.group, api=api)
    hit = await cache.lookup(plan, stream=stream)
    if plan.read or plan.header == "refresh":
        metrics.cache.labels(f.route.name, "hit" if hit else plan.header).inc()
    elif plan.header == "bypass":
        metrics.cache.labels(f.route.name, "bypass").inc()
    return plan, hit


async def serve_chat(request: web.Request, parse: ChatParser,
                     dialect: Dialect) -> web.StreamResponse:
    """One chat request end to end; `parse` turns the raw body into an OpenAI ChatRequest."""
    app = request.app
    metrics, accountant = app[METRICS], app[ACCOUNTANT]
    with observed(metrics, RequestRecord(request[REQUEST_ID]), request.headers) as record:
        runtime = current_runtime(request)
        chat = parse(await request.read())
        record.stream = chat.stream
        f = front(request, record, chat.model, runtime=runtime)
        rails = app[GUARDRAILS].for_route(f.route)
        body = await app[GUARDRAILS].check(rails, chat.body) if rails is not None else chat.body
        plan, hit = await _cache_lookup(request, f, body, chat.stream, dialect.api)
        # A cache hit costs nothing: it still counts as a request, reserves no money.
        planned = FREE if hit else reservation(runtime, f.route, f.group, body)
        ticket = await accountant.admit(runtime, f.policy, planned, metrics)
        metrics.in_flight.inc()
        served, usage, abandoned = None, None, False
        try:
            if hit is not None:
                usage = hit.usage
                record.provider = record.model = "cache"
                record.answered("2xx", usage, time.perf_counter() - record.started)
                return await reply_from_cache(request, f.route, hit, chat.stream,
                                              chat.include_usage, dialect)
            served = await app[ROUTER].serve(runtime, f.route, body, stream=chat.stream,
                                             include_usage=chat.include_usage,
                                             group_override=f.group)
            record.served(served)
            headers = response_headers(request, f.route, served, ticket)
            headers[CACHE_HEADER] = plan.header
            if served.stream is None:
                assert served.payload is not None
                overhead = time.perf_counter() - record.started - served.upstream_seconds
                headers["x-llmgate-overhead-ms"] = f"{overhead * 1000:.3f}"
                metrics.overhead.labels("false").observe(overhead)
                usage = served.usage
                record_usage(metrics, f.route, served, f.policy, usage)
                record.answered("2xx", usage, overhead)
                await app[CACHE].store_json(plan, served.payload)
                return web.Response(body=dialect.completion(served.payload),
                                    content_type="application/json", headers=headers)
            status_class, usage = await stream_out(request, f.route, served, f.policy, headers,
                                                   record.started, dialect,
                                                   app[CACHE].recorder(plan))
            record.answered(status_class, usage, headers.get("x-llmgate-overhead-ms"))
            return request[STREAM_RESPONSE]
        except asyncio.CancelledError:
            abandoned = served is None  # the client left while an upstream call was under way
            raise
        finally:
            metrics.in_flight.dec()
            record.cost_usd = accountant.settle_later(
                ticket, planned, runtime, served.target if served else None, usage,
                metrics=metrics, route=f.route.name, policy=f.policy, abandoned=abandoned)
