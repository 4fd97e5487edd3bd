"""The sidecar end to end on loopback, driven by the official OpenAI SDK.

Real app, real config files compiled from CRs, a real fake-upstream HTTP server: what an app
in the pod would see, including every error it must get in OpenAI's envelope.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import openai
import pytest

from tests.fakes.openai_upstream import Behaviour, FakeOpenAI
from tests.sidecar.harness import KEY, Gateway, provider, route, start_gateway, virtual_key


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    fake = await FakeOpenAI().start()
    yield fake
    await fake.close()


@pytest.fixture
async def second() -> AsyncIterator[FakeOpenAI]:
    fake = await FakeOpenAI().start()
    fake.default = Behaviour(content="Second target here")
    yield fake
    await fake.close()


def resources(first_url: str, second_url: str) -> list[dict]:
    return [
        provider("primary", baseURL=first_url),
        provider("backup", baseURL=second_url),
        provider("mock", "mock"),
        route("chat", [{"provider": "primary", "model": "up-1"},
                       {"provider": "backup", "model": "up-2"}], aliases=["chat-alias"]),
        route("secret-model", [{"provider": "mock", "model": "m"}]),
        virtual_key("team", secretName="team-key", models=["chat", "chat-alias"]),
    ]


@pytest.fixture
async def gateway(tmp_path: Path, upstream: FakeOpenAI, second: FakeOpenAI
                  ) -> AsyncIterator[Gateway]:
    gw = await start_gateway(tmp_path, resources(upstream.url, second.url))
    yield gw
    await gw.close()


def client(gw: Gateway, key: str = KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=10)


MESSAGES = [{"role": "user", "content": "Say hello"}]


async def test_plain_completion_is_forwarded_with_usage(gateway: Gateway,
                                                        upstream: FakeOpenAI) -> None:
    async with client(gateway) as c:
        raw = await c.chat.completions.with_raw_response.create(model="chat",
                                                                messages=MESSAGES)
        result = raw.parse()
    assert result.choices[0].message.content == "Hello from the fake upstream"
    assert result.usage is not None and result.usage.completion_tokens == 5
    assert upstream.requests[0]["model"] == "up-1"
    assert raw.headers["x-llmgate-route"] == "chat"
    assert raw.headers["x-llmgate-provider"] == "primary"
    assert raw.headers["x-llmgate-attempts"] == "1"
    assert float(raw.headers["x-llmgate-overhead-ms"]) >= 0
    assert raw.headers["x-request-id"]


async def test_stream_is_forwarded_chunk_by_chunk(gateway: Gateway,
                                                  upstream: FakeOpenAI) -> None:
    async with client(gateway) as c:
        stream = await c.chat.completions.create(model="chat-alias", messages=MESSAGES,
                                                 stream=True)
        chunks = [chunk async for chunk in stream]
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "Hello from the fake upstream"
    # Usage is always requested upstream, but only shown to a client that asked for it.
    assert upstream.requests[0]["stream_options"] == {"include_usage": True}
    assert all(ch.usage is None for ch in chunks)


async def test_stream_usage_reaches_a_client_that_asks(gateway: Gateway) -> None:
    async with client(gateway) as c:
        stream = await c.chat.completions.create(
            model="chat", messages=MESSAGES, stream=True,
            stream_options={"include_usage": True})
        chunks = [chunk async for chunk in stream]
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 7


@pytest.mark.parametrize("failure", [
    Behaviour(kind="status", status=500),
    Behaviour(kind="status", status=503),
    Behaviour(kind="status", status=429, headers={"retry-after": "0"}),
    Behaviour(kind="reset"),
    Behaviour(kind="malformed"),
])
async def test_first_target_failure_falls_back_to_second(
        gateway: Gateway, upstream: FakeOpenAI, second: FakeOpenAI,
        failure: Behaviour) -> None:
    upstream.script.append(failure)
    async with client(gateway) as c:
        raw = await c.chat.completions.with_raw_response.create(model="chat",
                                                                messages=MESSAGES)
    assert raw.parse().choices[0].message.content == "Second target here"
    assert raw.headers["x-llmgate-provider"] == "backup"
    assert raw.headers["x-llmgate-attempts"] == "2"
    assert second.requests[0]["model"] == "up-2"


async def test_connection_refused_falls_back(tmp_path: Path, second: FakeOpenAI) -> None:
    gw = await start_gateway(tmp_path, resources("http://127.0.0.1:9/v1", second.url))
    try:
        async with client(gw) as c:
            stream = await c.chat.completions.create(model="chat", messages=MESSAGES,
                                                     stream=True)
            text = "".join([ch.choices[0].delta.content or "" async for ch in stream
                            if ch.choices])
        assert text == "Second target here"
    finally:
        await gw.close()


async def test_stream_failure_before_first_byte_falls_back(
        gateway: Gateway, upstream: FakeOpenAI) -> None:
    upstream.script.append(Behaviour(kind="cut", chunks_before=0))
    async with client(gateway) as c:
        stream = await c.chat.completions.create(model="chat", messages=MESSAGES, stream=True)
        text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
    assert text == "Second target here"


@pytest.mark.parametrize("kind", ["cut", "error_event"])
async def test_failure_mid_stream_is_an_in_band_error_not_a_clean_end(
        gateway: Gateway, upstream: FakeOpenAI, kind: str) -> None:
    upstream.script.append(Behaviour(kind=kind, chunks_before=2))
    async with client(gateway) as c:
        stream = await c.chat.completions.create(model="chat", messages=MESSAGES, stream=True)
        received = []
        with pytest.raises(openai.APIError, match="upstream failed mid-stream"):
            async for ch in stream:
                received.append(ch)
    assert len(received) == 2
    scrape = await scrape_metrics(gateway)
    assert 'llmgate_stream_errors_total{reason="' in scrape


async def test_every_target_failing_gives_502_in_openai_envelope(
        gateway: Gateway, upstream: FakeOpenAI, second: FakeOpenAI) -> None:
    upstream.script.append(Behaviour(kind="status", status=500))
    second.script.append(Behaviour(kind="status", status=502))
    async with client(gateway) as c:
        with pytest.raises(openai.InternalServerError) as info:
            await c.chat.completions.create(model="chat", messages=MESSAGES)
    assert info.value.status_code == 502
    assert info.value.body["code"] == "upstream_server_error"  # type: ignore[index]


async def test_upstream_bad_request_is_not_retried_elsewhere(
        gateway: Gateway, upstream: FakeOpenAI, second: FakeOpenAI) -> None:
    upstream.script.append(Behaviour(kind="status", status=400, body={
        "error": {"message": "This model's maximum context length is 8192 tokens",
                  "code": "context_length_exceeded"}}))
    async with client(gateway) as c:
        with pytest.raises(openai.BadRequestError) as info:
            await c.chat.completions.create(model="chat", messages=MESSAGES)
    assert info.value.body["code"] == "context_length_exceeded"  # type: ignore[index]
    assert second.requests == []


@pytest.mark.parametrize(("body", "code", "param"), [
    ({"messages": []}, "empty_array", "messages"),
    ({"messages": MESSAGES, "max_tokens": 0}, "integer_below_min_value", "max_tokens"),
    ({"messages": MESSAGES, "max_completion_tokens": -1}, "integer_below_min_value",
     "max_completion_tokens"),
    ({}, "missing_required_parameter", "messages"),
])
async def test_own_rejections_use_openais_codes(gateway: Gateway, upstream: FakeOpenAI,
                                                body: dict, code: str, param: str) -> None:
    async with client(gateway) as c:
        with pytest.raises(openai.BadRequestError) as info:
            await c.post("/chat/completions", cast_to=object, body={"model": "chat", **body})
    assert (info.value.code, info.value.param) == (code, param)
    assert upstream.requests == []


async def test_wrong_key_is_401(gateway: Gateway) -> None:
    async with client(gateway, key="lg-wrong") as c:
        with pytest.raises(openai.AuthenticationError) as info:
            await c.chat.completions.create(model="chat", messages=MESSAGES)
    assert info.value.status_code == 401
    assert info.value.body["type"] == "authentication_error"  # type: ignore[index]


async def test_unknown_model_is_404(gateway: Gateway) -> None:
    async with client(gateway) as c:
        with pytest.raises(openai.NotFoundError) as info:
            await c.chat.completions.create(model="gpt-nope", messages=MESSAGES)
    assert info.value.body["code"] == "model_not_found"  # type: ignore[index]


async def test_model_outside_the_keys_allow_list_is_403(gateway: Gateway) -> None:
    async with client(gateway) as c:
        with pytest.raises(openai.PermissionDeniedError):
            await c.chat.completions.create(model="secret-model", messages=MESSAGES)
        models = await c.models.list()
    assert sorted(m.id for m in models.data) == ["chat", "chat-alias"]


@pytest.mark.parametrize(("body", "param"), [
    (b"{not json", None),
    (b"[1, 2]", None),
    (b'{"model": 7, "messages": []}', "model"),
    (b'{"model": "chat", "messages": "hi"}', "messages"),
    (b'{"model": "chat", "messages": [{"role": "user"}], "stream": "yes"}', "stream"),
    (b'{"model": "chat", "messages": [{"role": "user"}], "max_tokens": -1}', "max_tokens"),
])
async def test_malformed_requests_are_400_in_openai_envelope(
        gateway: Gateway, body: bytes, param: str | None) -> None:
    async with aiohttp.ClientSession() as session, session.post(
            gateway.base_url + "/chat/completions", data=body,
            headers={"Authorization": f"Bearer {KEY}",
                     "Content-Type": "application/json"}) as response:
        payload = await response.json()
    assert response.status == 400
    assert set(payload["error"]) == {"message", "type", "code", "param"}
    assert payload["error"]["type"] == "invalid_request_error"
    assert payload["error"]["param"] == param


async def test_huge_body_is_413(tmp_path: Path, upstream: FakeOpenAI,
                                second: FakeOpenAI) -> None:
    gw = await start_gateway(tmp_path, resources(upstream.url, second.url),
                             max_body_bytes=1024)
    try:
        async with aiohttp.ClientSession() as session, session.post(
                gw.base_url + "/chat/completions", data=b"x" * 4096,
                headers={"Authorization": f"Bearer {KEY}"}) as response:
            payload = await response.json()
        assert response.status == 413
        assert payload["error"]["code"] == "request_too_large"
    finally:
        await gw.close()


async def test_missing_key_and_unknown_path(gateway: Gateway) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(gateway.base_url + "/models") as response:
            assert response.status == 401
            assert (await response.json())["error"]["code"] == "missing_api_key"
        async with session.get(gateway.base_url + "/nope") as response:
            assert response.status == 404
            assert "error" in await response.json()


async def test_requests_the_fast_dispatch_hands_to_the_router(gateway: Gateway) -> None:
    """`api.connection.Dispatch` serves fixed POST paths itself; everything else must still
    get the router's answers, in the envelope: a GET on a POST path (405), an encoded path
    that only decodes to an endpoint's (404, as the router matches it), `Expect:
    100-continue` (the router's expect handler, then the endpoint), and the Messages
    endpoint's own dialect for its errors."""
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"model": "chat", "messages": MESSAGES}
    async with aiohttp.ClientSession() as session:
        async with session.get(gateway.base_url + "/chat/completions",
                               headers=headers) as response:
            assert response.status == 405
            assert (await response.json())["error"]["code"] == "method_not_allowed"
        async with session.post(gateway.url + "/v1/chat%2Fcompletions", json=body,
                                headers=headers) as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "unknown_url"
        async with session.post(gateway.base_url + "/chat/completions", json=body,
                                headers=headers, expect100=True) as response:
            assert response.status == 200
            assert (await response.json())["choices"]
        async with session.post(gateway.base_url + "/messages", json={"model": "nope"},
                                headers=headers) as response:
            assert response.status == 400
            assert (await response.json())["type"] == "error"  # Anthropic's envelope
        async with session.post(gateway.base_url + "/chat/completions", json=body,
                                headers=headers) as response:
            assert response.status == 200
            assert response.headers["x-request-id"]


async def scrape_metrics(gw: Gateway) -> str:
    async with aiohttp.ClientSession() as session, session.get(gw.ops_url + "/metrics") as r:
        assert r.status == 200
        return await r.text()


async def test_metrics_count_requests_fallbacks_and_tokens(
        gateway: Gateway, upstream: FakeOpenAI) -> None:
    upstream.script.append(Behaviour(kind="status", status=500))
    async with client(gateway) as c:
        await c.chat.completions.create(model="chat", messages=MESSAGES)
    text = await scrape_metrics(gateway)
    assert ('llmgate_requests_total{model="up-2",provider="backup",route="chat",'
            'status_class="2xx",virtual_key="team"} 1.0') in text
    assert 'llmgate_fallbacks_total{reason="serverError",route="chat"} 1.0' in text
    assert 'llmgate_upstream_errors_total{error_class="serverError",provider="primary"} 1.0' \
        in text
    assert 'direction="output"' in text and "llmgate_in_flight_requests 0.0" in text
    assert "llmgate_gateway_overhead_seconds_bucket" in text


async def test_pod_bound_key_serves_keyless_and_placeholder_requests_from_loopback(
        tmp_path: Path, upstream: FakeOpenAI, second: FakeOpenAI) -> None:
    from llmgate_contract import POD_BOUND_KEY

    gw = await start_gateway(tmp_path, resources(upstream.url, second.url), virtual_key="team")
    try:
        async with client(gw, key=POD_BOUND_KEY) as c:
            result = await c.chat.completions.create(model="chat", messages=MESSAGES)
            assert result.choices[0].message.content == "Hello from the fake upstream"
            # The bound key's policy applies: its model allow-list still holds.
            with pytest.raises(openai.PermissionDeniedError):
                await c.chat.completions.create(model="secret-model", messages=MESSAGES)
        async with aiohttp.ClientSession() as session, session.get(
                gw.base_url + "/models") as response:
            assert response.status == 200
        # A wrong real key is still wrong: binding does not turn auth off.
        async with client(gw, key="lg-wrong") as c:
            with pytest.raises(openai.AuthenticationError):
                await c.models.list()
    finally:
        await gw.close()


async def test_a_provider_key_echoed_by_the_upstream_never_reaches_the_client(
        tmp_path: Path, upstream: FakeOpenAI, second: FakeOpenAI) -> None:
    """Some providers repeat the rejected key in their 401 message; it must not leak."""
    provider_key = "sk-live-provider-secret-123456"
    crs = resources(upstream.url, second.url)
    crs[0]["spec"]["apiKey"] = {"secretKeyRef": {"name": "upstream-key", "key": "key"}}
    gw = await start_gateway(tmp_path, crs, {"upstream-key": {"key": provider_key}})
    echo = {"error": {"message": f"Incorrect API key provided: {provider_key}",
                      "code": "invalid_api_key"}}
    upstream.script.append(Behaviour(kind="status", status=401, body=echo))
    second.script.append(Behaviour(kind="status", status=401, body=echo))
    try:
        async with aiohttp.ClientSession() as session, session.post(
                gw.base_url + "/chat/completions",
                json={"model": "chat", "messages": MESSAGES},
                headers={"Authorization": f"Bearer {KEY}"}) as response:
            text = await response.text()
        assert response.status == 502
        assert provider_key not in text and "[REDACTED]" in text
        assert upstream.headers[0]["Authorization"] == f"Bearer {provider_key}"
    finally:
        await gw.close()
