"""`POST /v1/embeddings`: OpenAI embeddings in, routed to any target whose provider embeds.

Served by the one request lifecycle (`api.lifecycle`) like chat: reserves and settles input
tokens only, and lets routing retry and fall back as for chat. Targets whose adapter has no
embeddings (`Adapter.embeddings`, from the kind's row in the contract) are skipped; when
none is left the answer is a 400 `embeddings_not_supported` naming the providers.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
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
from llmgate_sidecar.upstream.providers.base import Usage

# Upstream calls of one embeddings request in flight at once, when its input is split.
PARALLEL = 8


def parse_embeddings(raw: bytes) -> dict[str, Any]:
    body = parse_json_object(raw)
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise BadRequest("'model' is required and must be a string", param="model",
                         code="invalid_type")
    value = body.get("input")
    if value is None or value == "" or value == []:
        raise BadRequest("'input' is required and must not be empty", param="input",
                         code="invalid_type")
    if not _input_shape_ok(value):
        raise BadRequest("'input' must be a string, an array of strings, an array of token "
                         "integers or an array of such arrays", param="input",
                         code="invalid_type")
    return body


def _input_shape_ok(value: Any) -> bool:
    """OpenAI's four input shapes; anything else would reach an adapter it could break."""
    def tokens(v: Any) -> bool:
        return isinstance(v, list) and all(isinstance(t, int) and not isinstance(t, bool)
                                           for t in v)
    if isinstance(value, str) or tokens(value):
        return True
    return isinstance(value, list) and (all(isinstance(v, str) for v in value)
                                        or all(tokens(v) for v in value))


def input_reservation(runtime: Runtime, group: Group, body: dict[str, Any]) -> Reservation:
    """Embeddings produce no output tokens: reserve the input at the dearest target."""
    size = measure_input(body)
    worst = Decimal(0)
    for price, _ in runtime.price_plan(group):
        worst = max(worst, price.worst_case(size.bound(price.matched or price.model), 0))
    return Reservation(size.estimate, 0, worst)


async def _embed(router: Router, route: Route, body: dict[str, Any], upstream: Upstream,
                 target: Target, deadline: float | None) -> Served:
    """One try at one target: one upstream call, or (when the model takes fewer inputs per
    call than were sent) one per slice of `input`, at most PARALLEL at a time, joined into
    one list. Any call failing fails the try (routing may retry it whole)."""
    adapter = upstream.adapter.embeddings
    assert adapter is not None  # `usable` filtered the others out
    size = adapter.inputs_per_request(target)
    inputs = body.get("input")
    if size is None or isinstance(inputs, str) or not isinstance(inputs, list) \
            or len(inputs) <= size:
        parts = [body]
    else:
        parts = [{**body, "input": inputs[i:i + size]} for i in range(0, len(inputs), size)]
    gate = asyncio.Semaphore(PARALLEL)

    async def one(part: dict[str, Any]) -> tuple[bytes, Usage, float]:
        async with gate:
            _, payload, seconds = await router.exchange(
                upstream, target, route, deadline,
                lambda: adapter.embeddings_request(part, target))
        assert payload is not None
        translated, usage = adapter.embeddings_response(payload, target, part)
        return translated, usage, seconds

    answers = await asyncio.gather(*(one(part) for part in parts))
    if len(answers) == 1:
        translated, usage, seconds = answers[0]
        return Served(target, upstream, 0, seconds, payload=translated, usage=usage)
    payload, usage = joined([(a[0], a[1]) for a in answers])
    return Served(target, upstream, 0, max(a[2] for a in answers), payload=payload,
                  usage=usage)


def joined(answers: list[tuple[bytes, Usage]]) -> tuple[bytes, Usage]:
    """OpenAI embeddings lists of consecutive slices of `input` -> one list, re-indexed;
    usage summed, known only if every part knew it."""
    data: list[Any] = []
    first: dict[str, Any] = {}
    for payload, _ in answers:
        part = orjson.loads(payload)
        first = first or part
        for item in part["data"]:
            data.append({**item, "index": len(data)})
    tokens = sum(u.prompt_tokens for _, u in answers)
    usage = Usage(prompt_tokens=tokens, known=all(u.known for _, u in answers))
    return orjson.dumps({**first, "data": data, "usage": {"prompt_tokens": tokens,
                                                           "total_tokens": tokens}}), usage


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
