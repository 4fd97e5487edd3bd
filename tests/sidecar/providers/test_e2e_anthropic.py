"""Anthropic behind the real sidecar, driven by the official OpenAI SDK: plain, streamed,
tool calls, usage, and every upstream error mapped to the documented gateway status. Each
test runs against Anthropic's API and against Claude on Vertex AI (the same Messages API
at `…/publishers/anthropic/models/{model}:rawPredict` / `:streamRawPredict`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from tests.fakes.anthropic_upstream import fake_anthropic
from tests.fakes.replay import ReplayUpstream, Reply
from tests.sidecar.harness import Gateway
from tests.sidecar.inbound.upstreams import start_vertex, vertex_spec
from tests.sidecar.providers.e2e import (
    MESSAGES,
    PROVIDER_KEY,
    TOOLS,
    client,
    failed_request,
    gateway_for,
    text_before_in_band_error,
)

VERTEX_MODEL = "claude-sonnet-4-5@20250929"


@pytest.fixture(params=["anthropic", "vertex-ai"])
async def upstream(request: pytest.FixtureRequest) -> AsyncIterator[ReplayUpstream]:
    fake = await (fake_anthropic().start() if request.param == "anthropic"
                  else start_vertex(scripted="anthropic"))
    yield fake
    await fake.close()


def claude_gateway(tmp_path: Path, upstream: ReplayUpstream,
                   **route_spec: Any) -> Awaitable[Gateway]:
    """The gateway in front of `upstream`: Anthropic's API, or Claude on Vertex AI."""
    if "/publishers/anthropic/" not in upstream.paths[-1]:
        return gateway_for(tmp_path, "anthropic", "claude-sonnet-4-5", baseURL=upstream.url,
                           route_spec=route_spec or None)
    return gateway_for(tmp_path, "vertex-ai", VERTEX_MODEL, api_key=False,
                       baseURL=upstream.url + "/v1", route_spec=route_spec or None,
                       **vertex_spec(upstream))


@pytest.fixture
async def gateway(tmp_path: Path, upstream: ReplayUpstream) -> AsyncIterator[Gateway]:
    gw = await claude_gateway(tmp_path, upstream)
    yield gw
    await gw.close()


async def test_plain_completion_with_usage(gateway: Gateway, upstream: ReplayUpstream) -> None:
    async with client(gateway) as c:
        raw = await c.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "system", "content": "Be brief."}, *MESSAGES])
        result = raw.parse()
    assert result.choices[0].message.content == "Hello from Claude"
    assert result.choices[0].finish_reason == "stop"
    assert result.usage is not None and result.usage.prompt_tokens == 20
    assert raw.headers["x-llmgate-provider"] == "up"
    sent = upstream.requests[0]
    assert sent.body["system"] == "Be brief." and sent.body["max_tokens"] == 4096
    if sent.path == "/v1/messages":
        assert sent.headers["x-api-key"] == PROVIDER_KEY
        assert sent.headers["anthropic-version"] == "2023-06-01"
        assert sent.body["model"] == "claude-sonnet-4-5"
    else:  # Vertex: the model in the URL, the version in the body, a Google token
        assert sent.path == ("/v1/projects/acme/locations/europe-west4/publishers/anthropic/"
                             f"models/{VERTEX_MODEL}:rawPredict")
        assert sent.headers["Authorization"] == "Bearer ya29.fake-1"
        assert "model" not in sent.body and "anthropic-version" not in sent.headers
        assert sent.body["anthropic_version"] == "vertex-2023-10-16"


async def test_stream_with_usage(gateway: Gateway, upstream: ReplayUpstream) -> None:
    async with client(gateway) as c:
        stream = await c.chat.completions.create(model="chat", messages=MESSAGES, stream=True,
                                                 stream_options={"include_usage": True})
        received = [chunk async for chunk in stream]
    sent = upstream.requests[0]
    assert sent.body["stream"] is True
    assert sent.path.endswith((":streamRawPredict", "/v1/messages"))
    assert "".join(ch.choices[0].delta.content or "" for ch in received
                   if ch.choices) == "Hello from Claude"
    assert received[-1].usage is not None
    assert (received[-1].usage.prompt_tokens, received[-1].usage.completion_tokens) == (30, 15)


async def test_tool_call_plain_and_streamed(gateway: Gateway, upstream: ReplayUpstream) -> None:
    async with client(gateway) as c:
        result = await c.chat.completions.create(model="chat", messages=MESSAGES, tools=TOOLS)
        stream = await c.chat.completions.create(model="chat", messages=MESSAGES, tools=TOOLS,
                                                 stream=True)
        received = [chunk async for chunk in stream]
    call = result.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert orjson.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    assert result.choices[0].finish_reason == "tool_calls"
    arguments = "".join(tc.function.arguments or "" for ch in received if ch.choices
                        for tc in ch.choices[0].delta.tool_calls or [] if tc.function)
    assert orjson.loads(arguments) == {"city": "Paris"}
    assert upstream.requests[0].body["tools"][0]["input_schema"]["required"] == ["city"]


async def test_n_greater_than_one_is_a_400_naming_n(gateway: Gateway,
                                                    upstream: ReplayUpstream) -> None:
    async with client(gateway) as c:
        with pytest.raises(openai.BadRequestError) as info:
            await c.chat.completions.create(model="chat", messages=MESSAGES, n=2)
    assert info.value.body["param"] == "n"  # type: ignore[index]
    assert upstream.requests == []


@pytest.mark.parametrize(("reply", "status", "code", "param"), [
    (Reply("error_overloaded.json", status=529), 502, "upstream_server_error", None),
    (Reply("error_rate_limit.json", status=429, headers={"retry-after": "3"}), 429,
     "rate_limit_exceeded", None),
    (Reply("error_prompt_too_long.json", status=400), 400, "context_length_exceeded",
     "messages"),
    (Reply("error_invalid.json", status=400), 400, "invalid_value", "messages"),
    (Reply("error_max_tokens.json", status=400), 400, "invalid_value", "max_tokens"),
    (Reply("error_not_found.json", status=404), 404, "model_not_found", "model"),
    (Reply("error_auth.json", status=401), 502, "invalid_api_key", None),
    (Reply(raw=b'{"type": "message", "content": 5}'), 502, "upstream_malformed_response",
     None),
])
async def test_upstream_errors_map_to_gateway_statuses(gateway: Gateway,
                                                       upstream: ReplayUpstream, reply: Reply,
                                                       status: int, code: str,
                                                       param: str | None) -> None:
    error = await failed_request(gateway, upstream, reply, status, code, param)
    if status == 429:
        assert error.response.headers["retry-after"] == "3"


@pytest.mark.parametrize("reply", [Reply("stream_error.sse"),
                                   Reply("stream_text.sse", cut_after=4)])
async def test_failure_mid_stream_ends_with_an_in_band_error(gateway: Gateway,
                                                             upstream: ReplayUpstream,
                                                             reply: Reply) -> None:
    assert await text_before_in_band_error(gateway, upstream, reply) == "Hello"


async def test_overloaded_is_retried_by_the_default_retry_policy(
        tmp_path: Path, upstream: ReplayUpstream) -> None:
    gw = await claude_gateway(tmp_path, upstream, retry={
        "attempts": 2, "backoff": {"initial": "10ms", "max": "10ms"}})
    upstream.script.append(Reply("error_overloaded.json", status=529))
    try:
        async with client(gw) as c:
            raw = await c.chat.completions.with_raw_response.create(model="chat",
                                                                    messages=MESSAGES)
        assert raw.parse().choices[0].message.content == "Hello from Claude"
        assert raw.headers["x-llmgate-attempts"] == "2"
    finally:
        await gw.close()


@pytest.mark.parametrize(("reply", "status", "code", "param"), [
    (Reply("error_rate_limit.json", status=429, provider="gemini"), 429,
     "rate_limit_exceeded", None),
    (Reply("error_not_found.json", status=404, provider="gemini"), 404, "model_not_found",
     "model"),
    (Reply("error_vertex_permission.json", status=403, provider="gemini"), 502,
     "invalid_api_key", None),
])
async def test_what_vertex_itself_refuses_for_claude_maps_as_for_gemini(
        tmp_path: Path, reply: Reply, status: int, code: str, param: str | None) -> None:
    """Quota, an unknown model and a missing permission are Vertex's own answers, in Google's
    error shape, before the request reaches Claude: classified as Vertex's Gemini errors."""
    upstream = await start_vertex(scripted="anthropic")
    gw = await claude_gateway(tmp_path, upstream)
    try:
        await failed_request(gw, upstream, reply, status, code, param)
    finally:
        await gw.close()
        await upstream.close()
