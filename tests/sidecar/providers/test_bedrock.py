"""The Bedrock adapter on Converse / ConverseStream transcripts: request shape and signing,
responses, event-stream events chunk by chunk, exceptions, cut streams, errors."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from llmgate_sidecar.errors import BadRequest, UpstreamError
from llmgate_sidecar.upstream.providers.base import Credentials
from llmgate_sidecar.upstream.providers.bedrock import BedrockAdapter, usage_of
from llmgate_sidecar.wire.eventstream import EventStreamParser
from llmgate_sidecar.wire.sse import Event

from tests.fakes.bedrock_upstream import ACCESS_KEY_ID, SECRET_ACCESS_KEY, frames
from tests.fakes.replay import transcript, transcript_json
from tests.sidecar.providers.streams import (
    chunks,
    decode,
    provider_config,
    target,
    text,
    tool_arguments,
)

SONNET = target("anthropic.claude-3-5-sonnet-20240620-v1:0")
HI = {"model": "b", "messages": [{"role": "user", "content": "hi"}]}
KEYS = {"aws-access-key-id": ACCESS_KEY_ID, "aws-secret-access-key": SECRET_ACCESS_KEY}


def adapter(extra: dict[str, str] | None = None) -> BedrockAdapter:
    return BedrockAdapter(provider_config("bedrock", awsRegion="eu-central-1"),
                          Credentials(extra=KEYS if extra is None else extra),
                          clock=lambda: datetime(2025, 5, 1, 8, 0, tzinfo=UTC))


def events(file: str) -> list[Event]:
    parser = EventStreamParser()
    return [e for f in frames(transcript("bedrock", file)) for e in parser.feed(f)]


def test_request_translates_and_is_signed_for_the_region() -> None:
    case = transcript_json("bedrock", "request_tools.json")
    request = adapter().chat_request(case["openai"], SONNET, stream=False)
    assert request.url == ("https://bedrock-runtime.eu-central-1.amazonaws.com/model/"
                           "anthropic.claude-3-5-sonnet-20240620-v1:0/converse")
    assert orjson.loads(request.body) == case["bedrock"]
    auth = request.headers["authorization"]
    assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/20250501/"
                           "eu-central-1/bedrock/aws4_request")
    assert SECRET_ACCESS_KEY not in auth
    assert "x-amz-security-token" not in request.headers


def test_stream_request_and_session_token() -> None:
    request = adapter({**KEYS, "aws-session-token": "FwoGZX"}).chat_request(
        HI, SONNET, stream=True)
    assert request.url.endswith("/converse-stream")
    assert request.headers["x-amz-security-token"] == "FwoGZX"


def test_missing_keys_is_an_auth_error_not_a_crash() -> None:
    with pytest.raises(UpstreamError) as info:
        adapter({}).chat_request(HI, SONNET, stream=False)
    assert info.value.error_class == "auth"


@pytest.mark.parametrize(("extra", "param"), [
    ({"n": 2}, "n"), ({"logprobs": True}, "logprobs"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://x.example/cat.png"}}]}]},
     "messages[0].content"),
])
def test_unsupported_features_are_a_400(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as info:
        adapter().chat_request({**HI, **extra}, SONNET, stream=False)
    assert info.value.param == param


def test_text_response() -> None:
    payload, usage = adapter().chat_response(transcript("bedrock", "response_text.json"),
                                             SONNET)
    data = orjson.loads(payload)
    assert data["choices"][0]["message"]["content"] == "Hello from Bedrock"
    assert data["choices"][0]["finish_reason"] == "stop"
    assert (usage.prompt_tokens, usage.completion_tokens) == (14, 4)


def test_tool_use_response_with_cache_reads() -> None:
    payload, usage = adapter().chat_response(transcript("bedrock", "response_tool_use.json"),
                                             SONNET)
    choice = orjson.loads(payload)["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["id"] == "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q"
    assert orjson.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert (usage.prompt_tokens, usage.cached_tokens) == (490, 100)


def test_cache_writes_split_by_ttl() -> None:
    """`cacheDetails` says which writes went to the 1-hour cache (priced apart); without
    `cacheWriteInputTokens` its entries are the writes."""
    _, usage = adapter().chat_response(transcript("bedrock", "response_cache_write_1h.json"),
                                       SONNET)
    assert (usage.prompt_tokens, usage.cache_write_tokens, usage.cache_write_1h_tokens) == (
        21 + 1834, 1834, 1000)
    details_only = usage_of({"inputTokens": 5, "outputTokens": 1, "cacheDetails": [
        {"ttl": "1h", "inputTokens": 7}, {"ttl": "5m", "inputTokens": 3}]})
    assert (details_only.prompt_tokens, details_only.cache_write_tokens,
            details_only.cache_write_1h_tokens) == (15, 10, 7)


@pytest.mark.parametrize("raw", [b"nope", b'{"output": {}}', b'{"output": {"message": '
                                 b'{"content": [1]}}}'])
def test_malformed_response(raw: bytes) -> None:
    with pytest.raises(UpstreamError) as info:
        adapter().chat_response(raw, SONNET)
    assert info.value.error_class == "malformed"


def test_text_stream_chunk_by_chunk() -> None:
    items = decode(adapter().stream_decoder(SONNET, include_usage=True),
                   events("stream_text.eventstream"))
    out = chunks(items)
    assert out[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"].get("content") for c in out[1:4]] == [
        "Hello", " from", " Bedrock"]
    assert text(out) == "Hello from Bedrock"
    assert out[-3]["choices"][0]["finish_reason"] == "stop"
    assert out[-2]["usage"]["total_tokens"] == 18 and out[-1] == "[DONE]"


def test_tool_use_stream() -> None:
    out = chunks(decode(adapter().stream_decoder(SONNET, include_usage=False),
                        events("stream_tool_use.eventstream")))
    start = next(c["choices"][0]["delta"]["tool_calls"][0] for c in out
                 if c != "[DONE]" and c["choices"][0]["delta"].get("tool_calls"))
    assert start["id"] == "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q" and start["index"] == 0
    assert orjson.loads(tool_arguments(out)) == {"city": "Paris"}
    assert text(out) == "Checking."
    assert out[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_exception_frame_mid_stream_raises() -> None:
    decoder = adapter().stream_decoder(SONNET, include_usage=False)
    *head, last = events("stream_exception.eventstream")
    for event in head:
        decoder.feed(event)
    with pytest.raises(UpstreamError) as info:
        decoder.feed(last)
    assert info.value.error_class == "serverError"


def test_stream_cut_before_message_stop() -> None:
    decoder = adapter().stream_decoder(SONNET, include_usage=False)
    for event in events("stream_text.eventstream")[:3]:
        decoder.feed(event)
    with pytest.raises(UpstreamError) as info:
        decoder.finish()
    assert info.value.error_class == "connectionError"


def test_malformed_stream_event() -> None:
    with pytest.raises(UpstreamError) as info:
        adapter().stream_decoder(SONNET, include_usage=False).feed(
            Event('{"contentBlockIndex": 0}', "contentBlockDelta"))
    assert info.value.error_class == "malformed"


@pytest.mark.parametrize(("status", "kind", "file", "error_class"), [
    (429, "ThrottlingException", "error_throttling.json", "rateLimit"),
    (400, "ValidationException", "error_validation_too_long.json", "contextWindow"),
    (400, "ValidationException", "error_validation.json", "badRequest"),
    (403, "AccessDeniedException", "error_access_denied.json", "auth"),
    (403, "InvalidSignatureException", "error_signature.json", "auth"),
    (503, "ServiceUnavailableException", "error_unavailable.json", "serverError"),
    (408, "ModelTimeoutException", "error_model_timeout.json", "timeout"),
])
def test_errors_are_classified_by_error_type(status: int, kind: str, file: str,
                                             error_class: str) -> None:
    headers = {"x-amzn-errortype": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"}
    error = adapter().classify(status, headers, transcript("bedrock", file), SONNET)
    assert error.error_class == error_class
