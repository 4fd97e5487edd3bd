"""Client mistakes are 4xx in the OpenAI envelope, never a 500: hostile-but-valid HTTP
(deep JSON, absurd token counts, non-ASCII keys, wrong Content-Encoding, broken multipart)
and what aiohttp's own parser refuses (where HTTP still allows an answer)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.sidecar.harness import KEY, Gateway, provider, route, start_gateway, virtual_key

AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    gw = await start_gateway(tmp_path, [
        provider("mock", "mock", mock={"reply": "ok"}),
        route("m", [{"provider": "mock", "model": "m"}]),
        route("whisper", [{"provider": "openai", "model": "whisper-1"}]),
        provider("openai", "openai", baseURL="http://127.0.0.1:9/v1",
                 apiKeySecret={"name": "team-key", "key": "api-key"}),
        virtual_key("team", secretName="team-key", limits={"tokensPerMinute": 100000})])
    try:
        yield gw
    finally:
        await gw.close()


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


async def raw(gw: Gateway, head: bytes, body: bytes = b"") -> tuple[int, bytes, bytes]:
    """Send bytes aiohttp's client would refuse to build; (status, headers, body)."""
    port = int(gw.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    headers, _, payload = data.partition(b"\r\n\r\n")
    return int(headers.split(b" ", 2)[1]), headers, payload


def assert_envelope(status: int, body: bytes, expected: int) -> dict[str, Any]:
    assert status == expected, body[:300]
    error = orjson.loads(body)["error"]
    assert error["message"] and error["type"]
    return dict(error)


@pytest.mark.parametrize("depth", [254, 300, 1000, 1024])
async def test_deeply_nested_json_is_a_400(gateway: Gateway, depth: int) -> None:
    body = orjson.dumps({**chat(), "metadata": "m"})[:-1] + b', "x": ' + \
        b"[" * depth + b'"x"' + b"]" * depth + b"}"
    async with aiohttp.ClientSession() as session:
        async with session.post(gateway.base_url + "/chat/completions", data=body,
                                headers={**AUTH, "Content-Type": "application/json"}) as r:
            error = assert_envelope(r.status, await r.read(), 400)
    assert "nested" in error["message"] or "depth" in error["message"]


@pytest.mark.parametrize(("field", "value"), [
    ("max_tokens", 2**64 - 1), ("max_completion_tokens", 2**63), ("n", 10**9)])
async def test_absurd_token_counts_are_a_400_not_a_429(gateway: Gateway, field: str,
                                                       value: int) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(gateway.base_url + "/chat/completions", headers=AUTH,
                                json=chat(**{field: value})) as r:
            error = assert_envelope(r.status, await r.read(), 400)
            assert "Retry-After" not in r.headers
    assert error["param"] == field


async def test_non_ascii_authorization_is_a_401(gateway: Gateway) -> None:
    body = orjson.dumps(chat())
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Authorization: Bearer lg-\xff\xfe\xc3\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    status, _, payload = await raw(gateway, head, body)
    assert_envelope(status, payload, 401)


async def test_gzip_content_encoding_on_a_plain_body_is_a_400(gateway: Gateway) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(gateway.base_url + "/chat/completions",
                                data=orjson.dumps(chat()),
                                headers={**AUTH, "Content-Type": "application/json",
                                         "Content-Encoding": "gzip"}) as r:
            assert_envelope(r.status, await r.read(), 400)


async def test_invalid_utf8_in_a_multipart_field_is_a_400(gateway: Gateway) -> None:
    boundary = b"XyZ"
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhis\xffper\r\n"
            b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
            b"Content-Type: audio/wav\r\n\r\nRIFF\r\n--XyZ--\r\n")
    async with aiohttp.ClientSession() as session:
        async with session.post(
                gateway.base_url + "/audio/transcriptions", data=body,
                headers={**AUTH, "Content-Type": "multipart/form-data; boundary="
                         + boundary.decode()}) as r:
            assert_envelope(r.status, await r.read(), 400)


async def test_a_malformed_request_line_still_gets_the_envelope(gateway: Gateway) -> None:
    status, headers, payload = await raw(
        gateway, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
    assert b"application/json" in headers.lower()
    assert_envelope(status, payload, 400)
