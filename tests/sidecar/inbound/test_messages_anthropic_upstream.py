"""`POST /v1/messages` through the gateway to an Anthropic upstream (replayed transcripts):
the answer survives Anthropic -> OpenAI -> Anthropic intact, streamed or not, with tools,
usage and errors; and a cached Messages answer replays as Messages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anthropic
import pytest

from tests.fakes.anthropic_upstream import fake_anthropic
from tests.fakes.replay import ReplayUpstream, Reply
from tests.sidecar.harness import Gateway
from tests.sidecar.inbound.anthropic_client import HELLO, TOOLS, anthropic_client
from tests.sidecar.providers.e2e import PROVIDER_KEY, gateway_for


@pytest.fixture
async def upstream() -> AsyncIterator[ReplayUpstream]:
    fake = await fake_anthropic().start()
    yield fake
    await fake.close()


@pytest.fixture
async def gateway(tmp_path: Path, upstream: ReplayUpstream) -> AsyncIterator[Gateway]:
    gw = await gateway_for(tmp_path, "anthropic", "claude-sonnet-4-5", baseURL=upstream.url,
                           route_spec={"cache": {"mode": "exact", "ttl": "1m"}})
    yield gw
    await gw.close()


async def test_plain_round_trip_keeps_text_usage_and_parameters(
        gateway: Gateway, upstream: ReplayUpstream) -> None:
    async with anthropic_client(gateway) as c:
        result = await c.messages.create(
            model="chat", max_tokens=77, system=[{"type": "text", "text": "Be brief."}],
            messages=HELLO, stop_sequences=["STOP"], extra_body={"top_k": 5})
    assert result.id == "msg_01XFDUDYJgAACzvnptvVoYEL"
    assert result.content[0].text == "Hello from Claude"  # type: ignore[union-attr]
    assert result.stop_reason == "end_turn"
    usage = result.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens) == (12, 8, 4)
    sent = upstream.requests[0]
    assert sent.headers["x-api-key"] == PROVIDER_KEY
    assert sent.body["system"] == "Be brief."
    assert sent.body["max_tokens"] == 77 and sent.body["top_k"] == 5
    assert sent.body["stop_sequences"] == ["STOP"]


async def test_stream_round_trip(gateway: Gateway) -> None:
    async with anthropic_client(gateway) as c, c.messages.stream(
            model="chat", max_tokens=50, messages=HELLO) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "Hello from Claude"
    assert final.id == "msg_01Stream"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (25, 15)


async def test_tool_use_round_trip_plain_and_streamed(gateway: Gateway,
                                                      upstream: ReplayUpstream) -> None:
    async with anthropic_client(gateway) as c:
        result = await c.messages.create(model="chat", max_tokens=50, messages=HELLO,
                                         tools=TOOLS, tool_choice={"type": "auto"})
        async with c.messages.stream(model="chat", max_tokens=50, messages=HELLO,
                                     tools=TOOLS) as stream:
            final = await stream.get_final_message()
    for message in (result, final):
        assert message.stop_reason == "tool_use"
        call = message.content[-1]
        assert call.type == "tool_use" and call.name == "get_weather"
        assert call.input == {"city": "Paris"}
    assert upstream.requests[0].body["tools"][0]["input_schema"]["required"] == ["city"]
    assert upstream.requests[0].body["tool_choice"] == {"type": "auto"}


@pytest.mark.parametrize(("reply", "error", "kind"), [
    (Reply("error_overloaded.json", status=529), anthropic.APIStatusError, "api_error"),
    (Reply("error_rate_limit.json", status=429, headers={"retry-after": "3"}),
     anthropic.RateLimitError, "rate_limit_error"),
    (Reply("error_prompt_too_long.json", status=400), anthropic.BadRequestError,
     "invalid_request_error"),
])
async def test_upstream_errors_keep_status_in_anthropic_envelope(
        gateway: Gateway, upstream: ReplayUpstream, reply: Reply,
        error: type[anthropic.APIStatusError], kind: str) -> None:
    upstream.script.append(reply)
    async with anthropic_client(gateway) as c:
        with pytest.raises(error) as info:
            await c.messages.create(model="chat", max_tokens=10, messages=HELLO)
    assert info.value.body["type"] == "error"  # type: ignore[index]
    assert info.value.body["error"]["type"] == kind  # type: ignore[index]
    assert PROVIDER_KEY not in str(info.value.body)


async def test_in_stream_upstream_error_becomes_an_error_event(
        gateway: Gateway, upstream: ReplayUpstream) -> None:
    upstream.script.append(Reply("stream_error.sse"))
    async with anthropic_client(gateway) as c:
        stream = await c.messages.create(model="chat", max_tokens=10, messages=HELLO,
                                         stream=True)
        with pytest.raises(anthropic.APIStatusError, match="upstream failed mid-stream"):
            async for _ in stream:
                pass


async def test_cached_answer_replays_as_a_message(gateway: Gateway,
                                                  upstream: ReplayUpstream) -> None:
    async with anthropic_client(gateway) as c:
        first = await c.messages.create(model="chat", max_tokens=20, messages=HELLO)
        raw = await c.messages.with_raw_response.create(model="chat", max_tokens=20,
                                                        messages=HELLO)
        again = await raw.parse()
        async with c.messages.stream(model="chat", max_tokens=20, messages=HELLO) as s:
            await s.get_final_message()
        async with c.messages.stream(model="chat", max_tokens=20, messages=HELLO) as s:
            replayed = await s.get_final_message()
    assert raw.headers["x-llmgate-cache"] == "hit"
    assert again.content == first.content and again.usage == first.usage
    assert replayed.content[0].text == "Hello from Claude"  # type: ignore[union-attr]
    assert replayed.usage.output_tokens == 15
    assert len(upstream.requests) == 2  # one JSON, one stream; the repeats were hits
