"""Azure OpenAI behind the real sidecar, driven by the official OpenAI SDK: deployment URL,
api-version and api-key on the wire; plain, streamed, tool calls, usage and error statuses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.fakes.azure_upstream import fake_azure
from tests.fakes.replay import ReplayUpstream, Reply
from tests.sidecar.harness import KEY, Gateway
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
    fake = await fake_azure().start()
    yield fake
    await fake.close()


@pytest.fixture
async def gateway(tmp_path: Path, upstream: ReplayUpstream) -> AsyncIterator[Gateway]:
    gw = await gateway_for(tmp_path, "azure-openai", "gpt4o-prod", baseURL=upstream.url,
                           azure={"apiVersion": "2024-10-21"})
    yield gw
    await gw.close()


async def test_plain_completion_reaches_the_deployment(gateway: Gateway,
                                                       upstream: ReplayUpstream) -> None:
    async with client(gateway) as c:
        result = await c.chat.completions.create(model="chat", messages=MESSAGES)
    assert result.choices[0].message.content == "Hello from Azure"
    assert result.usage is not None and result.usage.total_tokens == 12
    sent = upstream.requests[0]
    assert sent.path == "/openai/deployments/gpt4o-prod/chat/completions"
    assert sent.query == {"api-version": "2024-10-21"}
    assert sent.headers["api-key"] == PROVIDER_KEY
    assert "Authorization" not in sent.headers


async def test_stream_and_usage(gateway: Gateway, upstream: ReplayUpstream) -> None:
    async with client(gateway) as c:
        stream = await c.chat.completions.create(model="chat", messages=MESSAGES, stream=True,
                                                 stream_options={"include_usage": True})
        received = [chunk async for chunk in stream]
    assert "".join(ch.choices[0].delta.content or "" for ch in received
                   if ch.choices) == "Hello from Azure"
    assert received[-1].usage is not None and received[-1].usage.completion_tokens == 3
    assert upstream.requests[0].body["stream_options"] == {"include_usage": True}


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
    (Reply("error_content_filter.json", status=400), 400, "content_filter", "prompt"),
    (Reply("error_rate_limit.json", status=429, headers={"retry-after": "2"}), 429,
     "rate_limit_exceeded", None),
    (Reply("error_context.json", status=400), 400, "context_length_exceeded", "messages"),
    (Reply("error_bad_param.json", status=400), 400, "unsupported_value", "temperature"),
    (Reply("error_auth.json", status=401), 502, "invalid_api_key", None),
    (Reply("error_deployment_not_found.json", status=404), 404, "model_not_found", "model"),
    (Reply(raw=b"<html>502 Bad Gateway</html>", status=502), 502, "upstream_server_error",
     None),
])
async def test_upstream_errors_map_to_gateway_statuses(gateway: Gateway,
                                                       upstream: ReplayUpstream, reply: Reply,
                                                       status: int, code: str,
                                                       param: str | None) -> None:
    await failed_request(gateway, upstream, reply, status, code, param)


async def test_stream_cut_mid_way_is_an_in_band_error(gateway: Gateway,
                                                      upstream: ReplayUpstream) -> None:
    cut = Reply("stream_text.sse", cut_after=3)
    assert await text_before_in_band_error(gateway, upstream, cut) == "Hello"


async def test_the_prompt_filter_chunk_never_reaches_the_client(gateway: Gateway) -> None:
    """Azure opens its streams with `object: ""`, an empty id and no choices (prompt filter
    results); strict clients reject it, so every chunk relayed is a real OpenAI chunk."""
    async with aiohttp.ClientSession() as session, session.post(
            gateway.base_url + "/chat/completions", json={
                "model": "chat", "messages": MESSAGES, "stream": True},
            headers={"Authorization": f"Bearer {KEY}"}) as response:
        raw = (await response.read()).decode()
    events = [line[6:] for line in raw.split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert chunks and all(c["object"] == "chat.completion.chunk" and c["id"] and c["choices"]
                          for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == \
        "Hello from Azure"
