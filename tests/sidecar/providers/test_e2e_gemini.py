"""Gemini and Vertex AI behind the real sidecar, driven by the official OpenAI SDK: plain,
streamed, function calls, usage, safety blocks and upstream errors as gateway statuses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from tests.fakes.gemini_upstream import TokenEndpoint, fake_gemini, fake_vertex
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
from tests.sidecar.providers.gcp_key import service_account_key


@pytest.fixture
async def upstream() -> AsyncIterator[ReplayUpstream]:
    fake = await fake_gemini().start()
    yield fake
    await fake.close()


@pytest.fixture
async def gateway(tmp_path: Path, upstream: ReplayUpstream) -> AsyncIterator[Gateway]:
    gw = await gateway_for(tmp_path, "gemini", "gemini-2.0-flash",
                           baseURL=upstream.url + "/v1beta")
    yield gw
    await gw.close()


async def test_plain_completion(gateway: Gateway, upstream: ReplayUpstream) -> None:
    async with client(gateway) as c:
        result = await c.chat.completions.create(
            model="chat", messages=[{"role": "system", "content": "Be brief."}, *MESSAGES])
    assert result.choices[0].message.content == "Hello from Gemini"
    assert result.usage is not None and result.usage.total_tokens == 15
    sent = upstream.requests[0]
    assert sent.path == "/v1beta/models/gemini-2.0-flash:generateContent"
    assert sent.headers["x-goog-api-key"] == PROVIDER_KEY
    assert sent.body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert sent.body["contents"] == [{"role": "user", "parts": [{"text": "Say hello"}]}]


async def test_stream_with_usage(gateway: Gateway, upstream: ReplayUpstream) -> None:
    async with client(gateway) as c:
        stream = await c.chat.completions.create(model="chat", messages=MESSAGES, stream=True,
                                                 stream_options={"include_usage": True})
        received = [chunk async for chunk in stream]
    assert "".join(ch.choices[0].delta.content or "" for ch in received
                   if ch.choices) == "Hello from Gemini"
    assert received[-1].usage is not None and received[-1].usage.completion_tokens == 4
    assert upstream.requests[0].query == {"alt": "sse"}


async def test_function_calls_plain_and_streamed(gateway: Gateway) -> None:
    async with client(gateway) as c:
        result = await c.chat.completions.create(model="chat", messages=MESSAGES, tools=TOOLS)
        stream = await c.chat.completions.create(model="chat", messages=MESSAGES, tools=TOOLS,
                                                 stream=True)
        received = [chunk async for chunk in stream]
    call = result.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert orjson.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    assert result.choices[0].finish_reason == "tool_calls"
    arguments = "".join(tc.function.arguments or "" for ch in received if ch.choices
                        for tc in ch.choices[0].delta.tool_calls or [] if tc.function)
    assert orjson.loads(arguments) == {"city": "Paris"}


@pytest.mark.parametrize(("reply", "status", "code", "param"), [
    (Reply("response_prompt_blocked.json"), 400, "content_filter", None),
    (Reply("error_rate_limit.json", status=429), 429, "rate_limit_exceeded", None),
    (Reply("error_context.json", status=400), 400, "context_length_exceeded", "messages"),
    (Reply("error_not_found.json", status=404), 404, "model_not_found", "model"),
    (Reply("error_invalid.json", status=400), 400, "invalid_value", "messages"),
    (Reply("error_field_violation.json", status=400), 400, "invalid_value", "temperature"),
    (Reply("error_api_key_invalid.json", status=400), 502, "invalid_api_key", None),
    (Reply("error_unavailable.json", status=503), 502, "upstream_server_error", None),
    (Reply("error_deadline.json", status=504), 504, "upstream_timeout", None),
    (Reply(raw=b'{"candidates": "x"}'), 502, "upstream_malformed_response", None),
])
async def test_upstream_errors_map_to_gateway_statuses(gateway: Gateway,
                                                       upstream: ReplayUpstream, reply: Reply,
                                                       status: int, code: str,
                                                       param: str | None) -> None:
    error = await failed_request(gateway, upstream, reply, status, code, param)
    if status == 429:  # from google.rpc.RetryInfo, as the SDK's backoff reads it
        assert error.response.headers["retry-after"] == "21"


@pytest.mark.parametrize("reply", [Reply("stream_error.sse"),
                                   Reply("stream_text.sse", cut_after=1)])
async def test_failure_mid_stream_is_an_in_band_error(gateway: Gateway,
                                                      upstream: ReplayUpstream,
                                                      reply: Reply) -> None:
    assert await text_before_in_band_error(gateway, upstream, reply) == "Hello"


async def test_vertex_ai_with_a_service_account_key(tmp_path: Path) -> None:
    tokens = TokenEndpoint("")
    fake = await fake_vertex(tokens).start()
    key, tokens.public_key_pem = service_account_key(fake.url + "/token")
    gw = await gateway_for(
        tmp_path, "vertex-ai", "gemini-2.0-flash", api_key=False, baseURL=fake.url + "/v1",
        gcp={"project": "acme", "location": "europe-west4",
             "serviceAccountKey": {"secretKeyRef": {"name": "gcp", "key": "sa.json"}}},
        secrets={"gcp": {"sa.json": key}})
    try:
        async with client(gw) as c:
            first = await c.chat.completions.create(model="chat", messages=MESSAGES)
            stream = await c.chat.completions.create(model="chat", messages=MESSAGES,
                                                     stream=True)
            text = "".join([ch.choices[0].delta.content or "" async for ch in stream
                            if ch.choices])
        assert first.choices[0].message.content == "Hello from Gemini"
        assert text == "Hello from Gemini"
        assert [r.path for r in fake.requests] == [
            "/v1/projects/acme/locations/europe-west4/publishers/google/models/"
            f"gemini-2.0-flash:{method}" for method in ("generateContent",
                                                        "streamGenerateContent")]
        assert {r.headers["Authorization"] for r in fake.requests} == {"Bearer ya29.fake-1"}
        assert tokens.issued == ["ya29.fake-1"]
    finally:
        await gw.close()
        await fake.close()


async def test_vertex_ai_embeddings_through_predict(tmp_path: Path) -> None:
    tokens = TokenEndpoint("")
    fake = await fake_vertex(tokens).start()
    key, tokens.public_key_pem = service_account_key(fake.url + "/token")
    gw = await gateway_for(
        tmp_path, "vertex-ai", "text-embedding-005", api_key=False, baseURL=fake.url + "/v1",
        gcp={"project": "acme", "location": "europe-west4",
             "serviceAccountKey": {"secretKeyRef": {"name": "gcp", "key": "sa.json"}}},
        secrets={"gcp": {"sa.json": key}})
    try:
        async with client(gw) as c:
            result = await c.embeddings.create(model="chat", input=["hello there", "bonjour"],
                                               dimensions=3, encoding_format="float")
        assert [d.embedding for d in result.data] == [[0.0125, -0.0431, 0.0274],
                                                      [-0.0217, 0.0069, 0.0512]]
        assert result.usage.prompt_tokens == 7
        sent = fake.requests[0]
        assert sent.path.endswith("/publishers/google/models/text-embedding-005:predict")
        assert sent.body == {"instances": [{"content": "hello there"}, {"content": "bonjour"}],
                             "parameters": {"outputDimensionality": 3}}
        assert sent.headers["Authorization"] == "Bearer ya29.fake-1"
    finally:
        await gw.close()
        await fake.close()
