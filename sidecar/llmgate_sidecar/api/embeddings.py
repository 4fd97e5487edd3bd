"""`POST /v1/embeddings`: OpenAI embeddings in, routed to any target whose provider embeds.

Served by the one request lifecycle (`api.lifecycle`) like chat: reserves and settles input
tokens only, and lets routing retry and fall back as for chat. Targets whose adapter has no
embeddings (`Adapter.embeddings`, from the kind's row in the contract) are skipped; when
none is left the answer is a 400 `embeddings_not_supported` naming the providers.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aiohttp import web
from llmgate_contract.config import Group, Route, Target

from llmgate_sidecar.api.inbound import parse_json_object
from llmgate_sidecar.api.lifecycle import Endpoint, Exchange
from llmgate_sidecar.api.replies import response_headers
from llmgate_sidecar.api.state import ROUTER
from llmgate_sidecar.config.pricing import measure_input
from llmgate_sidecar.config.runtime import Runtime, Upstream
from llmgate_sidecar.errors import BadRequest
from llmgate_sidecar.policy.accounting import Reservation
from llmgate_sidecar.routing.router import Attempt, Router, Served


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
    size = measure_input(body)
    worst = Decimal(0)
    for price, _ in runtime.price_plan(group):
        worst = max(worst, price.worst_case(size.bound(price.matched or price.model), 0))
    return Reservation(size.estimate, 0, worst)


async def _embed(router: Router, route: Route, body: dict[str, Any], upstream: Upstream,
                 target: Target, deadline: float | None) -> Served:
    adapter = upstream.adapter.embeddings
    assert adapter is not None  # `usable` filtered the others out
    _, payload, seconds = await router.exchange(
        upstream, target, route, deadline, lambda: adapter.embeddings_request(body, target))
    assert payload is not None
    translated, usage = adapter.embeddings_response(payload, target, body)
    return Served(target, upstream, 0, seconds, payload=translated, usage=usage)


@dataclass(frozen=True, slots=True)
class EmbeddingsCall:
    body: dict[str, Any]
    model: str
    stream: bool = False
    include_usage: bool = False


class EmbeddingsEndpoint(Endpoint[EmbeddingsCall]):
    """`POST /v1/embeddings` as a lifecycle spec (see the module docstring)."""

    path = "/v1/embeddings"

    def parse(self, request: web.Request, raw: bytes) -> EmbeddingsCall:
        body = parse_embeddings(raw)
        return EmbeddingsCall(body, body["model"])

    def usable(self, upstream: Upstream) -> bool:
        return upstream.adapter.embeddings is not None

    def unsupported(self, names: list[str]) -> BadRequest:
        return BadRequest("none of this route's providers has an embeddings API: "
                          f"{', '.join(names)}", param="model", code="embeddings_not_supported")

    def reserve(self, exchange: Exchange[EmbeddingsCall]) -> Reservation:
        return input_reservation(exchange.front.runtime, exchange.front.group, exchange.body)

    def attempt(self, exchange: Exchange[EmbeddingsCall]) -> Attempt:
        router, route, body = exchange.request.app[ROUTER], exchange.route, exchange.body

        async def attempt(upstream: Upstream, target: Target, deadline: float | None) -> Served:
            return await _embed(router, route, body, upstream, target, deadline)
        return attempt

    async def reply(self, exchange: Exchange[EmbeddingsCall], served: Served) -> web.StreamResponse:
        exchange.outcome.usage, exchange.outcome.overhead = served.usage, exchange.overhead(served)
        assert served.payload is not None
        return web.Response(body=served.payload, content_type="application/json",
                            headers=response_headers(exchange.request, exchange.route, served,
                                                     exchange.ticket))
