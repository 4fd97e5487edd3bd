"""Every model-addressed endpoint of the inbound API, as specs of the one lifecycle.

`ENDPOINTS` is the table the app routes from (`POST <path>` -> `lifecycle.serve`) and the
error middleware reads (an error leaves in the dialect of the endpoint called). Chat
completions and Anthropic Messages are the same `ChatEndpoint` with a different parser and
dialect; embeddings and the pass-through paths have their own modules. How to add one: the
`api.lifecycle` docstring.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from aiohttp import web
from llmgate_contract.config import Target

from llmgate_sidecar.api.anthropic_inbound import parse_messages
from llmgate_sidecar.api.count_tokens import CountTokensEndpoint
from llmgate_sidecar.api.dialects import OPENAI, Dialect
from llmgate_sidecar.api.embeddings import EmbeddingsEndpoint
from llmgate_sidecar.api.inbound import parse_chat
from llmgate_sidecar.api.lifecycle import CachedEndpoint, Call, Endpoint, Exchange
from llmgate_sidecar.api.messages_api import ANTHROPIC
from llmgate_sidecar.api.passthrough import OPERATIONS, PassthroughEndpoint, relay
from llmgate_sidecar.api.replies import reply_from_cache, response_headers, stream_out
from llmgate_sidecar.api.responses_api import RESPONSES
from llmgate_sidecar.api.responses_inbound import ResponsesRequest, parse_responses
from llmgate_sidecar.api.state import CACHE, METRICS, ROUTER
from llmgate_sidecar.cache.response import CACHE_HEADER, Hit
from llmgate_sidecar.config.runtime import Upstream
from llmgate_sidecar.policy.accounting import Reservation, reservation
from llmgate_sidecar.routing.router import Attempt, Served

# What a chat-shaped endpoint parses into: a `ChatRequest`, or a call wrapping one (its
# `body` is the chat body), built from the inbound API's raw body by its parser.
ChatCall = TypeVar("ChatCall", bound=Call)


class ChatEndpoint(CachedEndpoint[ChatCall]):
    """A chat-shaped API: parsed into an OpenAI chat request, routed as chat completions,
    answered in `dialect` (OpenAI's own, or Anthropic Messages). Guardrails and the response
    cache apply; the reservation is the worst case over input and requested output."""

    guarded = True

    def __init__(self, path: str, parse: Callable[[bytes], ChatCall],
                 dialect: Dialect) -> None:
        self.path, self._parse, self.dialect = path, parse, dialect

    def parse(self, request: web.Request, raw: bytes) -> ChatCall:
        return self._parse(raw)

    def reserve(self, exchange: Exchange[ChatCall]) -> Reservation:
        f = exchange.front
        return reservation(f.runtime, f.route, f.group, exchange.body)

    def attempt(self, exchange: Exchange[ChatCall]) -> Attempt:
        call = exchange.call
        return exchange.request.app[ROUTER].chat_attempt(
            exchange.route, exchange.body, stream=call.stream,
            include_usage=call.include_usage)

    async def reply(self, exchange: Exchange[ChatCall], served: Served) -> web.StreamResponse:
        request, route, outcome = exchange.request, exchange.route, exchange.outcome
        app = request.app
        assert exchange.plan is not None  # cached: the lifecycle planned the lookup
        headers = response_headers(request, route, served, exchange.ticket)
        headers[CACHE_HEADER] = exchange.plan.header
        if served.stream is not None:
            return await stream_out(request, route, served, headers, exchange.record.started,
                                    self.dialect, outcome, app[CACHE].recorder(exchange.plan))
        assert served.payload is not None
        overhead = exchange.overhead(served)
        headers["x-llmgate-overhead-ms"] = f"{overhead * 1000:.3f}"
        app[METRICS].overhead.labels("false").observe(overhead)
        outcome.usage, outcome.overhead = served.usage, overhead
        if exchange.plan.write:
            await app[CACHE].store_json(exchange.plan, served.payload)
        return web.Response(body=self.dialect.completion(served.payload),
                            content_type="application/json", headers=headers)

    async def replay(self, exchange: Exchange[ChatCall], hit: Hit) -> web.StreamResponse:
        call = exchange.call
        return await reply_from_cache(exchange.request, exchange.route, hit, call.stream,
                                      call.include_usage, self.dialect)


class ResponsesEndpoint(ChatEndpoint[ResponsesRequest]):
    """`POST /v1/responses` for every provider: translated into chat and answered as a
    Responses object or event stream; at an `openai` target, unless guardrails rewrote the
    input, the request goes to OpenAI's own `/v1/responses` as it came and the answer is
    relayed untouched (stored responses, reasoning items). A request that needs OpenAI's
    server (`previous_response_id`, built-in tools, ...) is a pass-through to OpenAI-family
    targets only."""

    NATIVE_KINDS = frozenset({"openai"})

    def __init__(self) -> None:
        super().__init__("/v1/responses", parse_responses, RESPONSES)
        self._native_only = PassthroughEndpoint("responses")

    def delegate(self, call: Call) -> Endpoint[Any]:
        native = isinstance(call, ResponsesRequest) and call.native
        return self._native_only if native else self

    def attempt(self, exchange: Exchange[ResponsesRequest]) -> Attempt:
        translated = super().attempt(exchange)
        call = exchange.call
        if exchange.body is not call.body:  # guardrails rewrote it: never send the original
            return translated
        router, route = exchange.request.app[ROUTER], exchange.route

        async def attempt(upstream: Upstream, target: Target, deadline: float | None) -> Served:
            adapter = upstream.adapter.passthrough
            if upstream.provider.kind not in self.NATIVE_KINDS or adapter is None:
                return await translated(upstream, target, deadline)
            body = orjson.dumps({**call.raw, "model": target.model})
            response, _, seconds = await router.exchange(
                upstream, target, route, deadline, lambda: adapter.raw_request(
                    "responses", body, "application/json", target), keep_open=True)
            return Served(target, upstream, 0, seconds, response=response)
        return attempt

    async def reply(self, exchange: Exchange[ResponsesRequest],
                    served: Served) -> web.StreamResponse:
        if served.response is None:
            return await super().reply(exchange, served)
        exchange.outcome.overhead = exchange.overhead(served)
        headers = response_headers(exchange.request, exchange.route, served, exchange.ticket)
        return await relay(exchange.request, served, headers, exchange.outcome,
                           exchange.deadline_at)


MESSAGES_PATH = "/v1/messages"
ENDPOINTS: tuple[Endpoint[Any], ...] = (
    ChatEndpoint("/v1/chat/completions", parse_chat, OPENAI),
    ChatEndpoint(MESSAGES_PATH, parse_messages, ANTHROPIC),
    CountTokensEndpoint(),
    ResponsesEndpoint(),
    EmbeddingsEndpoint(),
    *(PassthroughEndpoint(operation) for operation in OPERATIONS if operation != "responses"),
)


def dialect_for(path: str) -> Dialect:
    """The dialect errors on `path` are written in: its endpoint's (also below its path, as
    `/v1/messages/...`), else OpenAI's."""
    for endpoint in ENDPOINTS:
        if path == endpoint.path or path.startswith(endpoint.path + "/"):
            return endpoint.dialect
    return OPENAI
