"""Bedrock behind the real sidecar, driven by the official OpenAI SDK: SigV4-signed requests
(verified by the fake), Converse and ConverseStream over real event-stream frames, tool calls,
usage, and upstream errors as the documented gateway statuses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import openai
import orjson
import pytest

from tests.fakes.bedrock_upstream import (
    ACCESS_KEY_ID,
    EVENTSTREAM,
    SECRET_ACCESS_KEY,
    fake_bedrock,
    frames,
    stream_reply,
)
from tests.fakes.replay import ReplayUpstream, Reply
from tests.sidecar.harness import Gateway
from tests.sidecar.providers.e2e import (
    MESSAGES,
    TOOLS,
    client,
    failed_request,
    gateway_for,
    text_before_in_band_error,
)

MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"


def aws(secret_key: str = "secret") -> dict[str, object]:
    return {"region": "eu-central-1",
            "accessKeyId": {"secretKeyRef": {"name": "aws", "key": "id"}},
            "secretAccessKey": {"secretKeyRef": {"name": "aws", "key": secret_key}}}


@pytest.fixture
async def upstream() -> AsyncIterator[ReplayUpstream]:
    fake = await fake_bedrock().start()
    yield fake
    await fake.close()


async def start(tmp_path: Path, upstream: ReplayUpstream, secret: str) -> Gateway:
    return await gateway_for(tmp_path, "bedrock", MODEL, api_key=False, baseURL=upstream.url,
                             aws=aws(), secrets={"aws": {"id": ACCESS_KEY_ID, "secret": secret}})


@pytest.fixture
async def gateway(tmp_path: Path, upstream: ReplayUpstream) -> AsyncIterator[Gateway]:
    gw = await start(tmp_path, upstream, SECRET_ACCESS_KEY)
    yield gw
    await gw.close()


async def test_plain_and_streamed_with_usage(gateway: Gateway, upstream: ReplayUpstream) -> None:
    async with client(gateway) as c:
        result = await c.chat.completions.create(model="chat", messages=MESSAGES)
        stream = await c.chat.completions.create(model="chat", messages=MESSAGES, stream=True,
                                                 stream_options={"include_usage": True})
        received = [chunk async for chunk in stream]
    assert result.choices[0].message.content == "Hello from Bedrock"
    assert result.usage is not None and result.usage.total_tokens == 18
    assert "".join(ch.choices[0].delta.content or "" for ch in received
                   if ch.choices) == "Hello from Bedrock"
    assert received[-1].usage is not None and received[-1].usage.prompt_tokens == 14
    assert [r.path for r in upstream.requests] == [f"/model/{MODEL}/converse",
                                                   f"/model/{MODEL}/converse-stream"]


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


async def test_wrong_secret_fails_signature_check_as_upstream_auth(
        tmp_path: Path, upstream: ReplayUpstream) -> None:
    gw = await start(tmp_path, upstream, "not-the-secret")
    try:
        async with client(gw) as c:
            with pytest.raises(openai.APIStatusError) as info:
                await c.chat.completions.create(model="chat", messages=MESSAGES)
        assert info.value.status_code == 502
        assert info.value.body["llmgate"]["code"] == "upstream_auth_failed"  # type: ignore[index]
        assert "not-the-secret" not in str(info.value.body)
    finally:
        await gw.close()


def _error(file: str, status: int, kind: str) -> Reply:
    return Reply(file, status=status, headers={
        "x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"})


@pytest.mark.parametrize(("reply", "status", "code", "param"), [
    (_error("error_throttling.json", 429, "ThrottlingException"), 429,
     "rate_limit_exceeded", None),
    (_error("error_validation_too_long.json", 400, "ValidationException"), 400,
     "context_length_exceeded", "messages"),
    (_error("error_model_invalid.json", 400, "ValidationException"), 404,
     "model_not_found", "model"),
    (_error("error_resource_not_found.json", 404, "ResourceNotFoundException"), 404,
     "model_not_found", "model"),
    (_error("error_validation_param.json", 400, "ValidationException"), 400,
     "invalid_value", "max_tokens"),
    (_error("error_validation.json", 400, "ValidationException"), 400,
     "invalid_value", "messages"),
    (_error("error_access_denied.json", 403, "AccessDeniedException"), 502,
     "invalid_api_key", None),
    (_error("error_unavailable.json", 503, "ServiceUnavailableException"), 502,
     "upstream_server_error", None),
    (_error("error_model_timeout.json", 408, "ModelTimeoutException"), 504, "upstream_timeout",
     None),
    (Reply(raw=b'{"output": null}'), 502, "upstream_malformed_response", None),
])
async def test_upstream_errors_map_to_gateway_statuses(gateway: Gateway,
                                                       upstream: ReplayUpstream, reply: Reply,
                                                       status: int, code: str,
                                                       param: str | None) -> None:
    await failed_request(gateway, upstream, reply, status, code, param)


@pytest.mark.parametrize("reply", [
    stream_reply("stream_exception.eventstream"),
    stream_reply("stream_text.eventstream", cut_after=2),
    Reply("stream_text.eventstream", content_type=EVENTSTREAM,
          frames=lambda raw: [*frames(raw)[:2], b"\x00\x00\x00\x20corrupt-frame-bytes!"]),
])
async def test_stream_failures_end_with_an_in_band_error(gateway: Gateway,
                                                         upstream: ReplayUpstream,
                                                         reply: Reply) -> None:
    await text_before_in_band_error(gateway, upstream, reply)


async def test_corrupt_first_frame_is_a_502_malformed(gateway: Gateway,
                                                      upstream: ReplayUpstream) -> None:
    upstream.script.append(Reply("stream_text.eventstream", content_type=EVENTSTREAM,
                                 frames=lambda raw: [b"\x00\x00\x00\x20corrupt-frame!!"]))
    async with client(gateway) as c:
        with pytest.raises(openai.APIStatusError) as info:
            await c.chat.completions.create(model="chat", messages=MESSAGES, stream=True)
    assert info.value.status_code == 502
    assert info.value.body["code"] == "upstream_malformed_response"  # type: ignore[index]
