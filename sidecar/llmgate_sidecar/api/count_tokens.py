"""`POST /v1/messages/count_tokens`: how many input tokens an Anthropic Messages request has.

Served by the one request lifecycle (auth, the model allow-list, routing; no money is
reserved: counting is free). The target that answers decides: at a target whose adapter
counts (`upstream.providers.base.TokenCounter`: Anthropic's own count_tokens endpoint,
Bedrock's CountTokens, Vertex AI's count-tokens for Claude models) the upstream counts with
the target's model and the answer is exact (`x-llmgate-token-count: exact`); any other
target gets `estimate_tokens`, an upper bound computed here without I/O (`estimate`), and
so does a Bedrock or Vertex target that refuses to count (`estimate_when_refused`). Errors
use Anthropic's envelope, as on `/v1/messages`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from llmgate_contract.config import Target

from llmgate_sidecar.api.anthropic_inbound import parse_messages
from llmgate_sidecar.api.inbound import parse_json_object, required_messages, required_model
from llmgate_sidecar.api.lifecycle import Endpoint, Exchange
from llmgate_sidecar.api.messages_api import ANTHROPIC
from llmgate_sidecar.api.replies import response_headers
from llmgate_sidecar.api.state import ROUTER
from llmgate_sidecar.config.runtime import Upstream
from llmgate_sidecar.errors import BadRequest, UpstreamError
from llmgate_sidecar.policy.accounting import FREE, Reservation
from llmgate_sidecar.routing.router import Attempt, Served

PATH = "/v1/messages/count_tokens"
COUNT_HEADER = "x-llmgate-token-count"
# The upper bound's parts (docs/api.md): every token of a byte-level tokenizer covers at
# least one UTF-8 byte; message framing; Anthropic's largest image after its own resizing;
# the system prompt a provider adds when tools are offered.
PER_REQUEST, PER_MESSAGE, PER_IMAGE, WITH_TOOLS = 8, 8, 1_600, 600


@dataclass(slots=True)
class CountRequest:
    body: dict[str, Any]
    model: str
    stream: bool = False
    include_usage: bool = False
    counted: str = "estimate"  # how the answer was counted: "exact" or "estimate"
    _chat: dict[str, Any] | None = None

    @property
    def messages(self) -> dict[str, Any]:
        return self.body

    def chat(self) -> dict[str, Any]:
        """The request as `/v1/messages` would route it (`max_tokens`, which counting has
        not, is a placeholder: counters send only the input)."""
        if self._chat is None:
            body = {**self.body, "max_tokens": 1, "stream": False}
            self._chat = parse_messages(orjson.dumps(body)).body
        return self._chat


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
        router, route, call = exchange.request.app[ROUTER], exchange.route, exchange.call

        def estimated(upstream: Upstream, target: Target) -> Served:
            call.counted = "estimate"
            estimate = orjson.dumps({"input_tokens": estimate_tokens(exchange.body)})
            return Served(target, upstream, 0, 0.0, payload=estimate)

        async def attempt(upstream: Upstream, target: Target, deadline: float | None) -> Served:
            counter = upstream.adapter.counter
            if counter is None or not counter.counts(target):
                return estimated(upstream, target)
            try:
                _, payload, seconds = await router.exchange(
                    upstream, target, route, deadline,
                    lambda: counter.count_tokens_request(call, target))
            except (BadRequest, UpstreamError) as exc:
                refused = isinstance(exc, BadRequest) or exc.error_class == "badRequest"
                if refused and counter.estimate_when_refused:
                    return estimated(upstream, target)
                raise
            assert payload is not None
            count = counter.count_tokens_response(payload, target)
            call.counted = "exact"
            return Served(target, upstream, 0, seconds,
                          payload=orjson.dumps({"input_tokens": count}))
        return attempt

    async def reply(self, exchange: Exchange[CountRequest],
                    served: Served) -> web.StreamResponse:
        assert served.payload is not None
        exchange.outcome.overhead = exchange.overhead(served)
        headers = response_headers(exchange.request, exchange.route, served, exchange.ticket)
        headers[COUNT_HEADER] = exchange.call.counted
        return web.Response(body=served.payload, headers=headers,
                            content_type="application/json")
