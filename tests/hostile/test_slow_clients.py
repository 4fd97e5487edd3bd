"""Slow clients cannot hold the API port: a request whose headers trickle in is cut off
after `client_header_timeout`, a body that trickles (or never ends) gets 408 in the envelope
after `client_body_timeout` (small values here; defaults 30 s, docs/limits.md)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from tests.sidecar.harness import KEY, Gateway, provider, route, start_gateway, virtual_key

LIMIT = 1.0
GUARD = 10.0  # far above LIMIT: the test fails if the connection is still held by then


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    gw = await start_gateway(tmp_path, [
        provider("mock", "mock", mock={"reply": "ok"}),
        route("m", [{"provider": "mock", "model": "m"}]),
        virtual_key("team", secretName="team-key")],
        client_header_timeout=LIMIT, client_body_timeout=LIMIT, client_idle_timeout=LIMIT)
    try:
        yield gw
    finally:
        await gw.close()


async def connect(gw: Gateway) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", int(gw.url.rsplit(":", 1)[1]))


async def trickle(writer: asyncio.StreamWriter, data: bytes, every: float = 0.2) -> None:
    for byte in data:
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(every)


async def test_trickled_headers_are_cut_off(gateway: Gateway) -> None:
    reader, writer = await connect(gateway)
    started = time.monotonic()
    sender = asyncio.ensure_future(trickle(
        writer, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200))
    try:
        assert await asyncio.wait_for(reader.read(), GUARD) == b""  # closed, nothing sent
    finally:
        sender.cancel()
        writer.close()
    assert time.monotonic() - started < GUARD


async def test_an_idle_connection_without_a_request_is_closed(gateway: Gateway) -> None:
    reader, writer = await connect(gateway)
    try:
        assert await asyncio.wait_for(reader.read(), GUARD) == b""
    finally:
        writer.close()


async def test_an_endless_chunked_body_gets_408_in_the_envelope(gateway: Gateway) -> None:
    reader, writer = await connect(gateway)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                 b"Authorization: Bearer " + KEY.encode() + b"\r\n"
                 b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")

    async def endless() -> None:
        while True:
            writer.write(b"1\r\n \r\n")
            await writer.drain()
            await asyncio.sleep(0.05)

    sender = asyncio.ensure_future(endless())
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD)
        assert head.split(b" ", 2)[1] == b"408", head
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        error = orjson.loads(await reader.readexactly(length))["error"]
        assert error["code"] == "request_timeout"
    finally:
        sender.cancel()
        writer.close()


def chat_request() -> bytes:
    """One complete chat request with the test key, as raw HTTP/1.1 bytes."""
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + KEY.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


async def test_an_idle_keep_alive_connection_is_closed(gateway: Gateway) -> None:
    """After an answer, a connection that sends nothing more is closed (aiohttp's own
    default keeps it an hour)."""
    reader, writer = await connect(gateway)
    try:
        writer.write(chat_request())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD)
        assert head.split(b" ", 2)[1] == b"200", head
        await asyncio.wait_for(reader.read(), GUARD)  # the rest, then the close
    finally:
        writer.close()


async def test_a_prompt_request_is_unaffected(gateway: Gateway) -> None:
    """Keep-alive: a second request on the same connection after a pause still works."""
    reader, writer = await connect(gateway)
    try:
        for _ in range(2):
            writer.write(chat_request())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD)
            assert head.split(b" ", 2)[1] == b"200", head
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            await reader.readexactly(length)
            await asyncio.sleep(LIMIT / 2)
    finally:
        writer.close()
