"""`POST /v1/messages` driven by the official anthropic SDK, routed to an OpenAI-compatible
upstream: plain, streamed, tool use both ways, images, and errors in Anthropic's envelope."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import pytest

from tests.fakes.openai_upstream import Behaviour, FakeOpenAI
from tests.sidecar.harness import KEY, Gateway
from tests.sidecar.inbound.anthropic_client import HELLO, TOOLS, anthropic_client, raw_events
from tests.sidecar.providers.e2e import gateway_for


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    fake = await FakeOpenAI().start()
    yield fake
    await fake.close()


@pytest.fixture
async def gateway(tmp_path: Path, upstream: FakeOpenAI) -> AsyncIterator[Gateway]:
    gw = await gateway_for(tmp_path, "openai-compatible", "gpt-4o-mini", baseURL=upstream.url)
    yield gw
    await gw.close()


async def test_plain_message_translated_both_ways(gateway: Gateway,
                                                  upstream: FakeOpenAI) -> None:
    async with anthropic_client(gateway) as c:
        raw = await c.messages.with_raw_response.create(
            model="chat", max_tokens=100, system="Be brief.", messages=HELLO,
            stop_sequences=["END"], metadata={"user_id": "u-1"}, extra_body={"temperature": 0.2},
            extra_headers={"anthropic-version": "2099-01-01"})
        result = await raw.parse()
    assert result.type == "message" and result.role == "assistant"
    assert result.content[0].type == "text"
    assert result.content[0].text == "Hello from the fake upstream"
    assert result.stop_reason == "end_turn"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (4, 5)
    assert raw.headers["x-llmgate-provider"] == "up"
    sent = upstream.requests[0]
    assert sent["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Say hello"}]
    assert sent["model"] == "gpt-4o-mini" and sent["max_tokens"] == 100
    assert (sent["temperature"], sent["stop"], sent["user"]) == (0.2, ["END"], "u-1")


async def test_stream_is_anthropic_events_with_usage(gateway: Gateway) -> None:
    async with anthropic_client(gateway) as c:
        events = await raw_events(c, model="chat", max_tokens=100, messages=HELLO)
        async with c.messages.stream(model="chat", max_tokens=100, messages=HELLO) as stream:
            text = "".join([piece async for piece in stream.text_stream])
            final = await stream.get_final_message()
    kinds = [e.type for e in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert kinds.count("content_block_delta") == 5  # one per upstream chunk, never buffered
    assert text == "Hello from the fake upstream"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 5 and final.usage.input_tokens == 2


async def test_tool_use_answer_plain_and_streamed(gateway: Gateway,
                                                  upstream: FakeOpenAI) -> None:
    upstream.script.extend([Behaviour(kind="tool_call"), Behaviour(kind="tool_call")])
    async with anthropic_client(gateway) as c:
        result = await c.messages.create(model="chat", max_tokens=100, messages=HELLO,
                                         tools=TOOLS, tool_choice={"type": "any"})
        async with c.messages.stream(model="chat", max_tokens=100, messages=HELLO,
                                     tools=TOOLS) as stream:
            kinds = [event.type async for event in stream]
            final = await stream.get_final_message()
    assert result.stop_reason == "tool_use"
    assert [b.type for b in result.content] == ["text", "tool_use"]
    call = result.content[1]
    assert call.type == "tool_use"
    assert (call.id, call.name, call.input) == ("call_fake_1", "get_weather", {"city": "Paris"})
    sent = upstream.requests[0]
    assert sent["tool_choice"] == "required"
    assert sent["tools"][0]["function"]["parameters"]["required"] == ["city"]
    assert "input_json" in kinds
    assert final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == ["text", "tool_use"]
    assert final.content[1].input == {"city": "Paris"}  # type: ignore[union-attr]


async def test_tool_result_and_image_reach_the_upstream_in_openai_shape(
        gateway: Gateway, upstream: FakeOpenAI) -> None:
    history: list[Any] = [
        {"role": "user", "content": [
            {"type": "text", "text": "Weather there?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "iVBORw0KGgo="}}]},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
             "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C and sunny"},
            {"type": "text", "text": "Summarise."}]}]
    async with anthropic_client(gateway) as c:
        result = await c.messages.create(model="chat", max_tokens=50, messages=history,
                                         tools=TOOLS, tool_choice={
                                             "type": "tool", "name": "get_weather",
                                             "disable_parallel_tool_use": True})
    assert result.content[0].type == "text"
    sent = upstream.requests[0]
    assert sent["messages"][0]["content"][1] == {
        "type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    assert sent["messages"][1]["tool_calls"][0]["function"] == {
        "name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": "toolu_1",
                                   "content": "18C and sunny"}
    assert sent["messages"][3] == {"role": "user", "content": "Summarise."}
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["parallel_tool_calls"] is False


async def test_errors_come_in_anthropics_envelope(gateway: Gateway,
                                                  upstream: FakeOpenAI) -> None:
    upstream.script.append(Behaviour(kind="status", status=429, headers={"retry-after": "2"},
                                     body={"error": {"message": "slow down",
                                                     "type": "rate_limit_error"}}))
    async with anthropic_client(gateway) as c:
        with pytest.raises(anthropic.RateLimitError) as limited:
            await c.messages.create(model="chat", max_tokens=10, messages=HELLO)
        with pytest.raises(anthropic.NotFoundError) as missing:
            await c.messages.create(model="nope", max_tokens=10, messages=HELLO)
    async with anthropic_client(gateway, api_key="lg-wrong") as c:
        with pytest.raises(anthropic.AuthenticationError) as denied:
            await c.messages.create(model="chat", max_tokens=10, messages=HELLO)
    assert limited.value.response.headers["retry-after"] == "2"
    assert limited.value.body == {"type": "error", "error": {
        "type": "rate_limit_error", "code": "rate_limit_exceeded",
        "message": limited.value.body["error"]["message"],  # type: ignore[index]
        "llmgate": {"code": "upstream_rate_limited", "provider": "up", "upstream_status": 429,
                    "attempts": 1}}}
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert denied.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "chat", "messages": HELLO}, "max_tokens"),
    ({"model": "chat", "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "data": "x"}}]}]},
     "messages[0].content[0]"),
    ({"model": "chat", "max_tokens": 5, "messages": HELLO, "thinking": "yes"}, "thinking"),
    ({"model": "chat", "max_tokens": 5, "messages": HELLO,
      "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0]"),
])
async def test_untranslatable_requests_are_400s_naming_the_field(
        gateway: Gateway, upstream: FakeOpenAI, body: dict[str, object], param: str) -> None:
    async with aiohttp.ClientSession() as session, session.post(
            gateway.url + "/v1/messages", json=body, headers={"x-api-key": KEY}) as response:
        error = await response.json()
    assert response.status == 400
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert param in error["error"]["message"]
    assert upstream.requests == []


async def test_failure_mid_stream_is_an_in_band_error_event(gateway: Gateway,
                                                            upstream: FakeOpenAI) -> None:
    upstream.script.append(Behaviour(kind="cut", chunks_before=2))
    seen: list[str] = []
    async with anthropic_client(gateway) as c:
        stream = await c.messages.create(model="chat", max_tokens=10, messages=HELLO,
                                         stream=True)
        with pytest.raises(anthropic.APIStatusError, match="upstream failed mid-stream"):
            async for event in stream:
                seen.append(event.type)
    assert seen[0] == "message_start" and "content_block_delta" in seen
    assert "message_stop" not in seen
