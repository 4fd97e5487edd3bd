"""Cohere behind the real sidecar, driven by the official OpenAI SDK: plain, streamed, tool
calls, usage, and upstream errors as the documented gateway statuses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from tests.fakes.cohere_upstream import fake_cohere
from tests.fakes.replay import ReplayUpstream, Reply
from tests.sidecar.harness import Gateway
from tests.sidecar.providers.e2e import (
    MESSAGES,
    PROVIDER_KEY,
    TOOLS,
    client,
    failed_request,
    gateway_for,
    text_before_in_band_error,
)


@pytest.fixture
async def upstream() -> AsyncIterator[ReplayUpstream]:
    fake = await fake_cohere().start()
    yield fake
    await fake.close()


@pytest.fixture
async def gateway(tmp_path: Path, upstream: ReplayUpstream) -> AsyncIterator[Gateway]:
    gw = await gateway_for(tmp_path, "cohere", "command-a-03-2025", baseURL=upstream.url)
    yield gw
    await gw.close()


async def test_plain_and_streamed(gateway: Gateway, upstream: ReplayUpstream) -> None:
    async with client(gateway) as c:
        result = await c.chat.completions.create(model="chat", messages=MESSAGES)
        stream = await c.chat.completions.create(model="chat", messages=MESSAGES, stream=True,
                                                 stream_options={"include_usage": True})
        received = [chunk async for chunk in stream]
    assert result.choices[0].message.content == "Hello from Cohere"
    assert result.usage is not None and result.usage.prompt_tokens == 71
    assert "".join(ch.choices[0].delta.content or "" for ch in received
                   if ch.choices) == "Hello from Cohere"
    assert received[-1].usage is not None and received[-1].usage.completion_tokens == 3
    assert upstream.requests[0].headers["Authorization"] == f"Bearer {PROVIDER_KEY}"
    assert upstream.requests[0].body["model"] == "command-a-03-2025"


async def test_tool_calls_plain_and_streamed(gateway: Gateway) -> None:
    async with client(gateway) as c:
        result = await c.chat.completions.create(model="chat", messages=MESSAGES, tools=TOOLS)
        stream = await c.chat.completions.create(model="chat", messages=MESSAGES, tools=TOOLS,
                                                 stream=True)
        received = [chunk async for chunk in stream]
    call = result.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert orjson.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    arguments = "".join(tc.function.arguments or "" for ch in received if ch.choices
                        for tc in ch.choices[0].delta.tool_calls or [] if tc.function)
    assert orjson.loads(arguments) == {"city": "Paris"}


@pytest.mark.parametrize(("reply", "status", "code", "param"), [
    (Reply("error_rate_limit.json", status=429), 429, "rate_limit_exceeded", None),
    (Reply("error_auth.json", status=401), 502, "invalid_api_key", None),
    (Reply("error_context.json", status=400), 400, "context_length_exceeded", "messages"),
    (Reply("error_blocked.json", status=400), 400, "content_filter", None),
    (Reply("error_invalid_param.json", status=400), 400, "invalid_value", "temperature"),
    (Reply("error_not_found.json", status=404), 404, "model_not_found", "model"),
    (Reply("error_server.json", status=500), 502, "upstream_server_error", None),
    (Reply(raw=b"[]"), 502, "upstream_malformed_response", None),
])
async def test_upstream_errors_map_to_gateway_statuses(gateway: Gateway,
                                                       upstream: ReplayUpstream, reply: Reply,
                                                       status: int, code: str,
                                                       param: str | None) -> None:
    await failed_request(gateway, upstream, reply, status, code, param)


@pytest.mark.parametrize("reply", [Reply("stream_error.sse"),
                                   Reply("stream_text.sse", cut_after=3)])
async def test_failure_mid_stream_is_an_in_band_error(gateway: Gateway,
                                                      upstream: ReplayUpstream,
                                                      reply: Reply) -> None:
    assert await text_before_in_band_error(gateway, upstream, reply) == "Hello"
