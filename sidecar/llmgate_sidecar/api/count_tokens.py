"""`POST /v1/messages/count_tokens`: how many input tokens an Anthropic Messages request has.

Served by the one request lifecycle (auth, the model allow-list, routing; no money is
reserved: counting is free). The target the route would try first decides: at an
`anthropic` target the request goes to Anthropic's own count_tokens endpoint with the
target's model and the answer is exact (`x-llmgate-token-count: exact`); any other target
gets `estimate_tokens`, an upper bound computed here without I/O (`estimate`). Errors use
Anthropic's envelope, as on `/v1/messages`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from llmgate_contract.config import Target

from llmgate_sidecar.api.inbound import parse_json_object, required_messages, required_model
from llmgate_sidecar.api.lifecycle import Endpoint, Exchange
from llmgate_sidecar.api.messages_api import ANTHROPIC
from llmgate_sidecar.api.replies import response_headers
from llmgate_sidecar.api.state import ROUTER
from llmgate_sidecar.config.runtime import Upstream
from llmgate_sidecar.errors import UpstreamError, UpstreamFailed
from llmgate_sidecar.policy.accounting import FREE, Reservation
from llmgate_sidecar.routing.router import Attempt, Served
from llmgate_sidecar.upstream.providers.anthropic import AnthropicAdapter

PATH = "/v1/messages/count_tokens"
COUNT_HEADER = "x-llmgate-token-count"
# The upper bound's parts (docs/api.md): every token of a byte-level tokenizer covers at
# least one UTF-8 byte; message framing; Anthropic's largest image after its own resizing;
# the system prompt a provider adds when tools are offered.
PER_REQUEST, PER_MESSAGE, PER_IMAGE, WITH_TOOLS = 8, 8, 1_600, 600


@dataclass(frozen=True, slots=True)
class CountRequest:
    body: dict[str, Any]
    model: str
    stream: bool = False
    include_usage: bool = False


def parse_count(raw: bytes) -> CountRequest:
    body = parse_json_object(raw)
    required_messages(body)
    return CountRequest(body, required_model(body))


def _text_bytes(value: Any) -> tuple[int, int]:
    """(UTF-8 bytes of every string in `value`, images in it), walking blocks and JSON."""
    if isinstance(value, str):
        return len(value.encode()), 0
    if isinstance(value, dict):
        if value.get("type") == "image":
            return 0, 1
        size = images = 0
        for key, item in value.items():
            if key in ("type", "cache_control", "id", "tool_use_id"):
                continue
            if key == "input" and isinstance(item, dict):  # tool_use arguments: as JSON
                size += len(orjson.dumps(item))
                continue
            more, pictures = _text_bytes(item)
            size, images = size + more, images + pictures
        return size, images
    if isinstance(value, list):
        size = images = 0
        for item in value:
            more, pictures = _text_bytes(item)
            size, images = size + more, images + pictures
        return size, images
    return 0, 0


def estimate_tokens(body: dict[str, Any]) -> int:
    """An upper bound of the input tokens of a Messages request for any tokenizer that
    never makes a token of less than one byte (docs/api.md says how loose it is)."""
    size, images = _text_bytes([body.get("system"), body.get("messages")])
    tools = body.get("tools") or []
    tool_bytes = len(orjson.dumps(tools)) if tools else 0
    return (PER_REQUEST + size + tool_bytes + PER_MESSAGE * len(body.get("messages") or [])
            + PER_IMAGE * images + (WITH_TOOLS if tools else 0))


class CountTokensEndpoint(Endpoint[CountRequest]):
    path = PATH
    dialect = ANTHROPIC

    def parse(self, request: web.Request, raw: bytes) -> CountRequest:
        return parse_count(raw)

    def reserve(self, exchange: Exchange[CountRequest]) -> Reservation:
        return FREE

    def attempt(self, exchange: Exchange[CountRequest]) -> Attempt:
        router, route, body = exchange.request.app[ROUTER], exchange.route, exchange.body

        async def attempt(upstream: Upstream, target: Target, deadline: float | None) -> Served:
            adapter = upstream.adapter
            if not isinstance(adapter, AnthropicAdapter):
                estimate = orjson.dumps({"input_tokens": estimate_tokens(body)})
                return Served(target, upstream, 0, 0.0, payload=estimate)
            _, payload, seconds = await router.exchange(
                upstream, target, route, deadline,
                lambda: adapter.count_tokens_request(body, target))
            return Served(target, upstream, 0, seconds, payload=payload)
        return attempt

    async def reply(self, exchange: Exchange[CountRequest],
                    served: Served) -> web.StreamResponse:
        exact = isinstance(served.upstream.adapter, AnthropicAdapter)
        assert served.payload is not None
        try:
            count = orjson.loads(served.payload).get("input_tokens")
        except (orjson.JSONDecodeError, AttributeError):
            count = None
        if not isinstance(count, int):
            target = served.target
            raise UpstreamFailed(UpstreamError(
                "malformed", f"{target.provider}: count_tokens answered without input_tokens",
                provider=target.provider, model=target.model), served.attempts)
        exchange.outcome.overhead = exchange.overhead(served)
        headers = response_headers(exchange.request, exchange.route, served, exchange.ticket)
        headers[COUNT_HEADER] = "exact" if exact else "estimate"
        return web.Response(body=orjson.dumps({"input_tokens": count}), headers=headers,
                            content_type="application/json")
