"""The Anthropic adapter on recorded Messages API transcripts: request, response, stream,
errors (including a stream cut mid-way and malformed payloads)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from llmgate_sidecar.errors import BadRequest, UpstreamError
from llmgate_sidecar.upstream.providers import adapter_for
from llmgate_sidecar.upstream.providers.anthropic import AnthropicAdapter
from llmgate_sidecar.upstream.providers.base import Credentials
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

CLAUDE = target("claude-sonnet-4-5")


def adapter(**fields: Any) -> AnthropicAdapter:
    a = adapter_for(provider_config("anthropic", **fields), Credentials(api_key="sk-ant-xyz"))
    assert isinstance(a, AnthropicAdapter)
    return a


def test_request_translates_system_images_tools_and_tool_results() -> None:
    case = transcript_json("anthropic", "request_tools.json")
    request = adapter().chat_request(case["openai"], CLAUDE, stream=False)
    assert request.url == "https://api.anthropic.com/v1/messages"
    assert request.headers["x-api-key"] == "sk-ant-xyz"
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert orjson.loads(request.body) == case["anthropic"]


def test_request_takes_max_tokens_from_the_request_and_streams_when_asked() -> None:
    body = {"model": "c", "messages": [{"role": "user", "content": "hi"}],
            "max_completion_tokens": 77, "tool_choice": {"type": "function",
                                                         "function": {"name": "f"}},
            "parallel_tool_calls": False}
    sent = orjson.loads(adapter(baseURL="http://10.0.0.1:9/v1").chat_request(
        body, CLAUDE, stream=True).body)
    assert sent["max_tokens"] == 77 and sent["stream"] is True
    assert sent["tool_choice"] == {"type": "tool", "name": "f",
                                   "disable_parallel_tool_use": True}
    assert adapter(baseURL="http://10.0.0.1:9/v1").chat_request(
        body, CLAUDE, stream=True).url == "http://10.0.0.1:9/v1/messages"


@pytest.mark.parametrize(("extra", "param"), [
    ({"n": 2}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"frequency_penalty": 0.5}, "frequency_penalty"),
])
def test_unsupported_features_are_a_400_naming_the_parameter(extra: dict[str, object],
                                                             param: str) -> None:
    body = {"model": "c", "messages": [{"role": "user", "content": "hi"}], **extra}
    with pytest.raises(BadRequest) as info:
        adapter().chat_request(body, CLAUDE, stream=False)
    assert info.value.param == param and info.value.status == 400


def test_bad_tool_arguments_are_a_400() -> None:
    body = {"model": "c", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [{"id": "t", "type": "function",
                                              "function": {"name": "f", "arguments": "[1"}}]}]}
    with pytest.raises(BadRequest, match="arguments"):
        adapter().chat_request(body, CLAUDE, stream=False)


def test_text_response_becomes_a_chat_completion_with_cache_aware_usage() -> None:
    payload, usage = adapter().chat_response(transcript("anthropic", "response_text.json"),
                                             CLAUDE)
    data = orjson.loads(payload)
    assert data["object"] == "chat.completion"
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "Hello from Claude",
                                             "refusal": None}
    assert data["choices"][0]["finish_reason"] == "stop"
    # input 12 + 8 read from cache: OpenAI counts cached tokens inside prompt_tokens.
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (20, 4, 8)
    assert data["usage"]["total_tokens"] == 24
    assert data["usage"]["prompt_tokens_details"]["cached_tokens"] == 8


def test_tool_use_response_becomes_tool_calls() -> None:
    payload, usage = adapter().chat_response(transcript("anthropic", "response_tool_use.json"),
                                             CLAUDE)
    choice = orjson.loads(payload)["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["id"] == "toolu_01T1x1fJ34qAmk2tNTrN7Up6"
    assert call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert usage.prompt_tokens == 400 and usage.completion_tokens == 57


@pytest.mark.parametrize("raw", [b"not json", b"[]", b'{"type": "message"}',
                                 b'{"type": "message", "content": ["x"]}'])
def test_malformed_response_is_classified_malformed(raw: bytes) -> None:
    with pytest.raises(UpstreamError) as info:
        adapter().chat_response(raw, CLAUDE)
    assert info.value.error_class == "malformed"


def test_text_stream_is_translated_event_by_event() -> None:
    events = events_of(transcript("anthropic", "stream_text.sse"))
    decoder = adapter().stream_decoder(CLAUDE, include_usage=True)
    items = decode(decoder, events)
    # One client chunk per upstream text event, as it arrives: never buffered.
    delta_items = [i for i, e in zip(items, events, strict=False)
                   if '"text_delta"' in e.data]
    assert [orjson.loads(i.downstream[6:])["choices"][0]["delta"]["content"]
            for i in delta_items] == ["Hello", " from", " Claude"]
    out = chunks(items)
    assert out[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert out[0]["id"] == "msg_01Stream"
    assert text(out) == "Hello from Claude"
    assert [c["choices"][0]["finish_reason"] for c in out[:-2]][-1] == "stop"
    assert out[-2]["choices"] == [] and out[-2]["usage"]["prompt_tokens"] == 30
    assert out[-2]["usage"]["completion_tokens"] == 15
    assert out[-1] == "[DONE]"
    assert items[-1].usage is not None and items[-1].usage.completion_tokens == 15


def test_stream_without_include_usage_has_no_usage_chunk_but_reports_usage() -> None:
    items = decode(adapter().stream_decoder(CLAUDE, include_usage=False),
                   events_of(transcript("anthropic", "stream_text.sse")))
    out = chunks(items)
    assert all(c == "[DONE]" or c["choices"] for c in out)
    done = [i for i in items if i.done]
    assert done and done[0].usage is not None and done[0].usage.known


def test_tool_use_stream_becomes_tool_call_deltas() -> None:
    out = chunks(decode(adapter().stream_decoder(CLAUDE, include_usage=False),
                        events_of(transcript("anthropic", "stream_tool_use.sse"))))
    starts = [c["choices"][0]["delta"]["tool_calls"][0] for c in out
              if c != "[DONE]" and c["choices"][0]["delta"].get("tool_calls")]
    assert starts[0] == {"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                         "type": "function", "function": {"name": "get_weather",
                                                          "arguments": ""}}
    assert orjson.loads(tool_arguments(out)) == {"city": "Paris"}
    assert text(out) == "Checking."
    assert out[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_in_band_error_event_raises_a_classified_error() -> None:
    decoder = adapter().stream_decoder(CLAUDE, include_usage=False)
    events = events_of(transcript("anthropic", "stream_error.sse"))
    for event in events[:-1]:
        decoder.feed(event)
    with pytest.raises(UpstreamError) as info:
        decoder.feed(events[-1])
    assert info.value.error_class == "serverError"
    assert "Overloaded" in info.value.message


def test_stream_cut_before_message_stop_is_a_connection_error() -> None:
    decoder = adapter().stream_decoder(CLAUDE, include_usage=False)
    for event in events_of(transcript("anthropic", "stream_text.sse"))[:5]:
        decoder.feed(event)
    with pytest.raises(UpstreamError) as info:
        decoder.finish()
    assert info.value.error_class == "connectionError"


@pytest.mark.parametrize("data", ["{oops", '"text"',
                                  '{"type": "content_block_delta", "index": 0}'])
def test_malformed_stream_event_is_malformed(data: str) -> None:
    decoder = adapter().stream_decoder(CLAUDE, include_usage=False)
    with pytest.raises(UpstreamError) as info:
        decoder.feed(Event(data))
    assert info.value.error_class == "malformed"


@pytest.mark.parametrize(("status", "file", "headers", "error_class", "retry_after"), [
    (529, "error_overloaded.json", {}, "serverError", None),
    (429, "error_rate_limit.json", {"retry-after": "7"}, "rateLimit", 7.0),
    (400, "error_prompt_too_long.json", {}, "contextWindow", None),
    (401, "error_auth.json", {}, "auth", None),
    (400, "error_invalid.json", {}, "badRequest", None),
    (500, "error_api.json", {}, "serverError", None),
])
def test_errors_are_classified(status: int, file: str, headers: dict[str, str],
                               error_class: str, retry_after: float | None) -> None:
    error = adapter().classify(status, headers, transcript("anthropic", file), CLAUDE)
    assert error.error_class == error_class
    assert error.retry_after == retry_after
    assert "sk-ant-xyz" not in error.message


def test_overloaded_529_is_retried_like_a_503() -> None:
    error = adapter().classify(529, {}, transcript("anthropic", "error_overloaded.json"), CLAUDE)
    assert error.status == 503
