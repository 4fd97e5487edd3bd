"""The Gemini adapter on recorded generateContent transcripts: request, response, SSE
stream, safety blocks, function calling and errors (stream cut, malformed payloads)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from llmgate_sidecar.errors import BadRequest, UpstreamError
from llmgate_sidecar.upstream.providers import adapter_for
from llmgate_sidecar.upstream.providers.base import Credentials
from llmgate_sidecar.upstream.providers.gemini import GeminiAdapter
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

FLASH = target("gemini-2.0-flash")
HI = {"model": "g", "messages": [{"role": "user", "content": "hi"}]}


def adapter(**fields: Any) -> GeminiAdapter:
    a = adapter_for(provider_config("gemini", **fields), Credentials(api_key="AIza-secret"))
    assert isinstance(a, GeminiAdapter)
    return a


def test_request_translates_roles_system_images_tools_and_results() -> None:
    case = transcript_json("gemini", "request_tools.json")
    request = adapter().chat_request(case["openai"], FLASH, stream=False)
    assert request.url == ("https://generativelanguage.googleapis.com/v1beta/models/"
                           "gemini-2.0-flash:generateContent")
    assert request.headers["x-goog-api-key"] == "AIza-secret"
    assert orjson.loads(request.body) == case["gemini"]


def test_stream_request_uses_sse_and_json_schema_maps() -> None:
    body = {**HI, "tool_choice": {"type": "function", "function": {"name": "f"}},
            "response_format": {"type": "json_schema", "json_schema": {
                "name": "x", "schema": {"type": "object"}}}}
    request = adapter().chat_request(body, FLASH, stream=True)
    assert request.url.endswith(":streamGenerateContent?alt=sse")
    sent = orjson.loads(request.body)
    assert sent["toolConfig"] == {"functionCallingConfig": {
        "mode": "ANY", "allowedFunctionNames": ["f"]}}
    assert sent["generationConfig"] == {"responseMimeType": "application/json",
                                        "responseJsonSchema": {"type": "object"}}


@pytest.mark.parametrize(("extra", "param"), [({"n": 3}, "n"), ({"logprobs": True}, "logprobs"),
                                              ({"logit_bias": {"1": 2}}, "logit_bias")])
def test_unsupported_features_are_a_400(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as info:
        adapter().chat_request({**HI, **extra}, FLASH, stream=False)
    assert info.value.param == param


def test_text_response_and_usage() -> None:
    payload, usage = adapter().chat_response(transcript("gemini", "response_text.json"), FLASH)
    data = orjson.loads(payload)
    assert data["choices"][0]["message"]["content"] == "Hello from Gemini"
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["model"] == "gemini-2.0-flash"
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (11, 4, 6)


def test_function_call_response_counts_thinking_as_output() -> None:
    payload, usage = adapter().chat_response(
        transcript("gemini", "response_function_call.json"), FLASH)
    choice = orjson.loads(payload)["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert usage.completion_tokens == 18


def test_blocked_prompt_is_a_content_filter_error() -> None:
    with pytest.raises(UpstreamError) as info:
        adapter().chat_response(transcript("gemini", "response_prompt_blocked.json"), FLASH)
    assert info.value.error_class == "contentFilter"
    assert "SAFETY" in info.value.message


def test_candidate_stopped_for_safety_has_finish_reason_content_filter() -> None:
    payload, _ = adapter().chat_response(
        transcript("gemini", "response_candidate_safety.json"), FLASH)
    assert orjson.loads(payload)["choices"][0]["finish_reason"] == "content_filter"


@pytest.mark.parametrize("raw", [b"<html>", b'{"candidates": []}', b'{"candidates": [3]}',
                                 b'{"candidates": [{"content": {}}]}'])
def test_malformed_response_is_malformed(raw: bytes) -> None:
    with pytest.raises(UpstreamError) as info:
        adapter().chat_response(raw, FLASH)
    assert info.value.error_class == "malformed"


def test_stream_chunk_by_chunk_with_usage_at_the_end() -> None:
    items = decode(adapter().stream_decoder(FLASH, include_usage=True),
                   events_of(transcript("gemini", "stream_text.sse")))
    assert len(items) == 4  # three upstream events -> three chunks, then the end
    out = chunks(items)
    assert out[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hello"}
    assert text(out) == "Hello from Gemini"
    assert out[2]["choices"][0]["finish_reason"] == "stop"
    assert out[3]["usage"]["completion_tokens"] == 4 and out[4] == "[DONE]"
    assert items[-1].usage is not None and items[-1].usage.prompt_tokens == 11


def test_usage_only_chunk_after_the_finish_updates_usage() -> None:
    decoder = adapter().stream_decoder(FLASH, include_usage=True)
    events = events_of(transcript("gemini", "stream_text.sse"))
    for event in events:
        decoder.feed(event)
    assert not decoder.feed(Event('{"usageMetadata": {"promptTokenCount": 11, '
                                  '"candidatesTokenCount": 9}}')).downstream
    end = decoder.finish()
    assert end.usage is not None and end.usage.completion_tokens == 9
    assert b'"completion_tokens":9' in end.downstream


def test_blocked_prompt_in_a_stream_is_a_content_filter_error() -> None:
    with pytest.raises(UpstreamError) as info:
        adapter().stream_decoder(FLASH, include_usage=False).feed(
            Event(transcript("gemini", "response_prompt_blocked.json").decode()))
    assert info.value.error_class == "contentFilter"


def test_stream_function_call() -> None:
    out = chunks(decode(adapter().stream_decoder(FLASH, include_usage=False),
                        events_of(transcript("gemini", "stream_function_call.sse"))))
    call = out[0]["choices"][0]["delta"]["tool_calls"][0]
    assert call["index"] == 0 and call["function"]["name"] == "get_weather"
    assert orjson.loads(tool_arguments(out)) == {"city": "Paris"}
    assert out[0]["choices"][0]["finish_reason"] == "tool_calls"
    assert out[-1] == "[DONE]"


def test_stream_without_a_finish_reason_was_cut() -> None:
    decoder = adapter().stream_decoder(FLASH, include_usage=False)
    for event in events_of(transcript("gemini", "stream_text.sse"))[:2]:
        decoder.feed(event)
    with pytest.raises(UpstreamError) as info:
        decoder.finish()
    assert info.value.error_class == "connectionError"


def test_in_band_stream_error_is_classified() -> None:
    decoder = adapter().stream_decoder(FLASH, include_usage=False)
    first, error = events_of(transcript("gemini", "stream_error.sse"))
    decoder.feed(first)
    with pytest.raises(UpstreamError) as info:
        decoder.feed(error)
    assert info.value.error_class == "serverError"


def test_malformed_stream_event() -> None:
    with pytest.raises(UpstreamError) as info:
        adapter().stream_decoder(FLASH, include_usage=False).feed(Event("{bad"))
    assert info.value.error_class == "malformed"


@pytest.mark.parametrize(("status", "file", "error_class"), [
    (429, "error_rate_limit.json", "rateLimit"),
    (400, "error_api_key_invalid.json", "auth"),
    (400, "error_context.json", "contextWindow"),
    (400, "error_invalid.json", "badRequest"),
    (503, "error_unavailable.json", "serverError"),
    (504, "error_deadline.json", "timeout"),
    (403, "error_vertex_permission.json", "auth"),
])
def test_errors_are_classified(status: int, file: str, error_class: str) -> None:
    error = adapter().classify(status, {}, transcript("gemini", file), FLASH)
    assert error.error_class == error_class
    assert "AIza-secret" not in error.message


def test_rate_limit_retry_delay_comes_from_retry_info() -> None:
    error = adapter().classify(429, {}, transcript("gemini", "error_rate_limit.json"), FLASH)
    assert error.retry_after == 21.0
