"""`POST /v1/embeddings`: OpenAI embeddings in, routed to any target whose provider embeds.

Shares the request front (auth, route, allow-list, rules) with chat, reserves and settles
input tokens only, and lets routing retry and fall back as for chat. Targets whose adapter
has no embeddings (`providers.base.embeddings_of`) are skipped; when none is left the answer
is a 400 `embeddings_not_supported` naming the providers. Called by the app's router.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from aiohttp import web
from llmgate_contract.config import Group, Target

from llmgate_sidecar.api.inbound import parse_json_object
from llmgate_sidecar.api.pipeline import current_runtime, front
from llmgate_sidecar.api.replies import record_usage, response_headers
from llmgate_sidecar.api.state import ACCOUNTANT, METRICS, REQUEST_ID, ROUTER
from llmgate_sidecar.config.pricing import estimate_input_tokens, price_for
from llmgate_sidecar.config.runtime import Runtime, Upstream
from llmgate_sidecar.errors import BadRequest
from llmgate_sidecar.observability.observe import observed
from llmgate_sidecar.observability.record import RequestRecord
from llmgate_sidecar.policy.accounting import Reservation, leaves
from llmgate_sidecar.routing.router import Router, Served
from llmgate_sidecar.upstream.providers.base import embeddings_of


def parse_embeddings(raw: bytes) -> dict[str, Any]:
    body = parse_json_object(raw)
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise BadRequest("'model' is required and must be a string", param="model",
                         code="invalid_type")
    value = body.get("input")
    if value is None or value == "" or value == []:
        raise BadRequest("'input' is required and must not be empty", param="input",
                         code="invalid_type")
    return body


def input_reservation(runtime: Runtime, group: Group, body: dict[str, Any]) -> Reservation:
    """Embeddings produce no output tokens: reserve the input at the dearest target."""
    tokens = estimate_input_tokens(body)
    worst = Decimal(0)
    for target in leaves(group):
        upstream = runtime.upstreams.get(target.provider)
        price = price_for(target.model, upstream.provider.pricing if upstream else None)
        worst = max(worst, price.worst_case(tokens, 0))
    return Reservation(tokens, 0, worst)


def require_embedding_targets(runtime: Runtime, group: Group) -> None:
    kinds = {}
    for target in leaves(group):
        upstream = runtime.upstreams.get(target.provider)
        if upstream is not None and embeddings_of(upstream.adapter) is not None:
            return
        kinds[target.provider] = upstream.provider.kind if upstream else "unknown"
    names = ", ".join(f"{name} ({kind})" for name, kind in sorted(kinds.items()))
    raise BadRequest(f"none of this route's providers has an embeddings API: {names}",
                     param="model", code="embeddings_not_supported")


async def _embed(router: Router, route: Any, body: dict[str, Any], upstream: Upstream,
                 target: Target, deadline: float | None) -> Served:
    adapter = embeddings_of(upstream.adapter)
    assert adapter is not None  # `usable` filtered the others out
    _, payload, seconds = await router.exchange(
        upstream, target, route, deadline, lambda: adapter.embeddings_request(body, target))
    assert payload is not None
    translated, usage = adapter.embeddings_response(payload, target, body)
    return Served(target, upstream, 0, seconds, payload=translated, usage=usage)


async def embeddings(request: web.Request) -> web.StreamResponse:
    app = request.app
    metrics, accountant, router = app[METRICS], app[ACCOUNTANT], app[ROUTER]
    with observed(metrics, RequestRecord(request[REQUEST_ID]), request.headers) as record:
        runtime = current_runtime(request)
        body = parse_embeddings(await request.read())
        f = front(request, record, body["model"], runtime=runtime)
        require_embedding_targets(runtime, f.group)
        planned = input_reservation(runtime, f.group, body)
        ticket = await accountant.admit(runtime, f.policy, planned, metrics)
        metrics.in_flight.inc()
        served = None
        try:
            async def attempt(upstream: Upstream, target: Target,
                              deadline: float | None) -> Served:
                return await _embed(router, f.route, body, upstream, target, deadline)
            served = await router.call(runtime, f.route, f.group, attempt,
                                       usable=lambda u: embeddings_of(u.adapter) is not None)
            record.served(served)
            overhead = time.perf_counter() - record.started - served.upstream_seconds
            record_usage(metrics, f.route, served, f.policy, served.usage)
            record.answered("2xx", served.usage, overhead)
            assert served.payload is not None
            return web.Response(body=served.payload, content_type="application/json",
                                headers=response_headers(request, f.route, served, ticket))
        finally:
            metrics.in_flight.dec()
            record.cost_usd = accountant.settle_later(
                ticket, planned, runtime, served.target if served else None,
                served.usage if served else None, metrics=metrics, route=f.route.name,
                policy=f.policy)
