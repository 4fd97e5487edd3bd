"""The Cohere v2 Chat adapter on recorded transcripts: request, response, stream events,
tool calls, errors (stream cut, in-band ERROR finish, malformed payloads)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from llmgate_sidecar.errors import BadRequest, UpstreamError
from llmgate_sidecar.upstream.providers import adapter_for
from llmgate_sidecar.upstream.providers.base import Credentials
from llmgate_sidecar.upstream.providers.cohere import CohereAdapter
from llmgate_sidecar.wire.sse import Event

from tests.fakes.replay import transcript, transcript_json
from tests.sidecar.providers.streams import (
    chunks,
    decode,
    events_of,
    provider_config,
    target,
    text,
    tool_arguments,
)

COMMAND = target("command-a-03-2025")
HI = {"model": "c", "messages": [{"role": "user", "content": "hi"}]}


def adapter(**fields: Any) -> CohereAdapter:
    a = adapter_for(provider_config("cohere", **fields), Credentials(api_key="co-secret"))
    assert isinstance(a, CohereAdapter)
    return a


def test_request_maps_parameters_tools_and_tool_turns() -> None:
    case = transcript_json("cohere", "request_tools.json")
    request = adapter().chat_request(case["openai"], COMMAND, stream=False)
    assert request.url == "https://api.cohere.com/v2/chat"
    assert request.headers["authorization"] == "Bearer co-secret"
    assert orjson.loads(request.body) == case["cohere"]


def test_forcing_one_named_tool_offers_only_that_tool_as_required() -> None:
    tools = [{"type": "function", "function": {"name": n}} for n in ("a", "b")]
    sent = orjson.loads(adapter().chat_request(
        {**HI, "tools": tools, "tool_choice": {"type": "function", "function": {"name": "b"}},
         "response_format": {"type": "json_object"}}, COMMAND, stream=True).body)
    assert [t["function"]["name"] for t in sent["tools"]] == ["b"]
    assert sent["tool_choice"] == "REQUIRED" and sent["stream"] is True
    assert sent["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize(("extra", "param"), [({"n": 2}, "n"), ({"logprobs": True}, "logprobs")])
def test_unsupported_features_are_a_400(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as info:
        adapter().chat_request({**HI, **extra}, COMMAND, stream=False)
    assert info.value.param == param


def test_text_response_uses_real_token_counts() -> None:
    payload, usage = adapter().chat_response(transcript("cohere", "response_text.json"),
                                             COMMAND)
    data = orjson.loads(payload)
    assert data["choices"][0]["message"]["content"] == "Hello from Cohere"
    assert data["choices"][0]["finish_reason"] == "stop"
    assert (usage.prompt_tokens, usage.completion_tokens) == (71, 3)


def test_tool_call_response() -> None:
    payload, _ = adapter().chat_response(transcript("cohere", "response_tool_call.json"),
                                         COMMAND)
    choice = orjson.loads(payload)["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["id"] == "get_weather_k4jcg"
    assert orjson.loads(call["function"]["arguments"]) == {"city": "Paris"}


@pytest.mark.parametrize("raw", [b"{", b'{"id": "x"}', b'{"message": {"content": 3}}'])
def test_malformed_response(raw: bytes) -> None:
    with pytest.raises(UpstreamError) as info:
        adapter().chat_response(raw, COMMAND)
    assert info.value.error_class == "malformed"


def test_text_stream() -> None:
    items = decode(adapter().stream_decoder(COMMAND, include_usage=True),
                   events_of(transcript("cohere", "stream_text.sse")))
    out = chunks(items)
    assert out[0]["id"] == "29f14a5a-11de-4cae-9800-25e4747408ea"
    assert text(out) == "Hello from Cohere"
    assert out[-3]["choices"][0]["finish_reason"] == "stop"
    assert out[-2]["usage"]["prompt_tokens"] == 71 and out[-1] == "[DONE]"


def test_tool_call_stream() -> None:
    out = chunks(decode(adapter().stream_decoder(COMMAND, include_usage=False),
                        events_of(transcript("cohere", "stream_tool_call.sse"))))
    first = next(c for c in out if c != "[DONE]"
                 and c["choices"][0]["delta"].get("tool_calls"))
    assert first["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert orjson.loads(tool_arguments(out)) == {"city": "Paris"}
    assert out[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_error_finish_in_stream_raises() -> None:
    decoder = adapter().stream_decoder(COMMAND, include_usage=False)
    *head, last = events_of(transcript("cohere", "stream_error.sse"))
    for event in head:
        decoder.feed(event)
    with pytest.raises(UpstreamError) as info:
        decoder.feed(last)
    assert info.value.error_class == "serverError"


def test_stream_cut_before_message_end() -> None:
    decoder = adapter().stream_decoder(COMMAND, include_usage=False)
    for event in events_of(transcript("cohere", "stream_text.sse"))[:4]:
        decoder.feed(event)
    with pytest.raises(UpstreamError) as info:
        decoder.finish()
    assert info.value.error_class == "connectionError"


def test_malformed_stream_event() -> None:
    with pytest.raises(UpstreamError) as info:
        adapter().stream_decoder(COMMAND, include_usage=False).feed(
            Event('{"type": "content-delta", "delta": {}}'))
    assert info.value.error_class == "malformed"


@pytest.mark.parametrize(("status", "file", "error_class"), [
    (429, "error_rate_limit.json", "rateLimit"),
    (401, "error_auth.json", "auth"),
    (498, "error_auth.json", "auth"),
    (400, "error_context.json", "contextWindow"),
    (400, "error_blocked.json", "contentFilter"),
    (400, "error_invalid.json", "badRequest"),
    (500, "error_server.json", "serverError"),
])
def test_errors_are_classified(status: int, file: str, error_class: str) -> None:
    error = adapter().classify(status, {"retry-after": "4"}, transcript("cohere", file), COMMAND)
    assert error.error_class == error_class
    assert error.retry_after == 4.0
