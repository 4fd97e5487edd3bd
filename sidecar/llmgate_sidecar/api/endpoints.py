"""Every model-addressed endpoint of the inbound API, as specs of the one lifecycle.

`ENDPOINTS` is the table the app routes from (`POST <path>` -> `lifecycle.serve`) and the
error middleware reads (an error leaves in the dialect of the endpoint called). Chat
completions and Anthropic Messages are the same `ChatEndpoint` with a different parser and
dialect; embeddings and the pass-through paths have their own modules. How to add one: the
`api.lifecycle` docstring.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from llmgate_sidecar.api.anthropic_inbound import parse_messages
from llmgate_sidecar.api.dialects import OPENAI, Dialect
from llmgate_sidecar.api.embeddings import EmbeddingsEndpoint
from llmgate_sidecar.api.inbound import ChatRequest, parse_chat
from llmgate_sidecar.api.lifecycle import Endpoint, Exchange
from llmgate_sidecar.api.messages_api import ANTHROPIC
from llmgate_sidecar.api.passthrough import OPERATIONS, PassthroughEndpoint
from llmgate_sidecar.api.replies import reply_from_cache, response_headers, stream_out
from llmgate_sidecar.api.state import CACHE, METRICS, ROUTER
from llmgate_sidecar.cache.response import CACHE_HEADER, Hit
from llmgate_sidecar.policy.accounting import Reservation, reservation
from llmgate_sidecar.routing.router import Attempt, Served

# Turns an inbound API's raw body into the OpenAI-shaped request chat runs on.
ChatParser = Callable[[bytes], ChatRequest]


class ChatEndpoint(Endpoint[ChatRequest]):
    """A chat-shaped API: parsed into an OpenAI chat request, routed as chat completions,
    answered in `dialect` (OpenAI's own, or Anthropic Messages). Guardrails and the response
    cache apply; the reservation is the worst case over input and requested output."""

    guarded = True
    cached = True

    def __init__(self, path: str, parse: ChatParser, dialect: Dialect) -> None:
        self.path, self._parse, self.dialect = path, parse, dialect

    def parse(self, request: web.Request, raw: bytes) -> ChatRequest:
        return self._parse(raw)

    def reserve(self, exchange: Exchange[ChatRequest]) -> Reservation:
        f = exchange.front
        return reservation(f.runtime, f.route, f.group, exchange.body)

    def attempt(self, exchange: Exchange[ChatRequest]) -> Attempt:
        call = exchange.call
        return exchange.request.app[ROUTER].chat_attempt(
            exchange.route, exchange.body, stream=call.stream,
            include_usage=call.include_usage)

    async def reply(self, exchange: Exchange[ChatRequest], served: Served) -> web.StreamResponse:
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
        await app[CACHE].store_json(exchange.plan, served.payload)
        return web.Response(body=self.dialect.completion(served.payload),
                            content_type="application/json", headers=headers)

    async def replay(self, exchange: Exchange[ChatRequest], hit: Hit) -> web.StreamResponse:
        call = exchange.call
        return await reply_from_cache(exchange.request, exchange.route, hit, call.stream,
                                      call.include_usage, self.dialect)


MESSAGES_PATH = "/v1/messages"
ENDPOINTS: tuple[Endpoint[Any], ...] = (
    ChatEndpoint("/v1/chat/completions", parse_chat, OPENAI),
    ChatEndpoint(MESSAGES_PATH, parse_messages, ANTHROPIC),
    EmbeddingsEndpoint(),
    *(PassthroughEndpoint(operation) for operation in OPERATIONS),
)


def dialect_for(path: str) -> Dialect:
    """The dialect errors on `path` are written in: its endpoint's (also below its path, as
    `/v1/messages/...`), else OpenAI's."""
    for endpoint in ENDPOINTS:
        if path == endpoint.path or path.startswith(endpoint.path + "/"):
            return endpoint.dialect
    return OPENAI
