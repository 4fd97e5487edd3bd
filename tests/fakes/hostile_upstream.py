"""A hostile OpenAI-compatible upstream: a real aiohttp server on loopback that misbehaves.

The target `model` of a request picks the attack (see `ATTACKS`): a gzip bomb, a 50 MB
JSON answer, a 100 MB error body, an SSE line or event that never ends, headers that never
come, a stream that goes silent after its first chunk, usage with negative counts. Bodies
are written in chunks as they are generated, so the fake itself stays small; every attack
ends by itself (bounded size or time).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable
from functools import cache

import orjson
from aiohttp import web

MIB = 1024 * 1024
BOMB_BYTES = 256 * MIB  # what the gzip bomb inflates to (about 256 KB on the wire)
HUGE_JSON_BYTES = 50 * MIB
HUGE_ERROR_BYTES = 100 * MIB
ENDLESS_BYTES = 64 * MIB  # an SSE line/event "that never ends" (bounded so the fake stops)
SILENCE = 30.0  # seconds the silent attacks stay silent (longer than any test waits)
_PIECE = 256 * 1024


@cache
def gzip_bomb() -> bytes:
    """A gzip body that inflates to BOMB_BYTES of a JSON-looking prefix and zeros."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [packer.compress(b'{"id": "bomb", "choices": [{"message": {"content": "')]
    zeros = b"0" * MIB
    parts.extend(packer.compress(zeros) for _ in range(BOMB_BYTES // MIB))
    parts.append(packer.flush())
    return b"".join(parts)


def completion(content: str, usage: dict[str, int] | None = None) -> bytes:
    return orjson.dumps({
        "id": "chatcmpl-hostile", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": usage or {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})


def chunk(content: str) -> bytes:
    return b"data: " + orjson.dumps({
        "id": "chatcmpl-hostile", "object": "chat.completion.chunk", "created": 0,
        "model": "m", "choices": [{"index": 0, "delta": {"content": content},
                                   "finish_reason": None}]}) + b"\n\n"


async def _filler(response: web.StreamResponse, head: bytes, total: int,
                  byte: bytes = b"a") -> None:
    await response.write(head)
    piece = byte * _PIECE
    sent = len(head)
    try:
        while sent < total:
            await response.write(piece)
            sent += len(piece)
    except (ConnectionResetError, ConnectionError):
        pass  # the gateway gave up reading: what a bounded reader should do


class HostileUpstream:
    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.requests = 0

    async def start(self) -> HostileUpstream:
        # Built once, up front: compressing 256 MiB takes a second of CPU, which inside the
        # handler would look like a slow first byte.
        await asyncio.to_thread(gzip_bomb)
        app = web.Application(client_max_size=64 * MIB)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._chat)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5,
                                     handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        body = await request.json()
        attack = ATTACKS.get(str(body.get("model")))
        if attack is None:
            return web.Response(body=completion("fine"), content_type="application/json")
        return await attack(request)


async def _gzip_bomb(request: web.Request) -> web.StreamResponse:
    payload = gzip_bomb()
    response = web.StreamResponse(headers={"Content-Type": "application/json",
                                           "Content-Encoding": "gzip",
                                           "Content-Length": str(len(payload))})
    await response.prepare(request)
    try:
        for start in range(0, len(payload), _PIECE):
            await response.write(payload[start:start + _PIECE])
    except ConnectionError:
        pass
    return response


async def _huge_json(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    await _filler(response, b'{"id": "x", "choices": [{"message": {"content": "',
                  HUGE_JSON_BYTES)
    await response.write(b'"}}]}')
    return response


async def _huge_error(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(status=500, headers={"Content-Type": "application/json"})
    await response.prepare(request)
    await _filler(response, b'{"error": {"message": "', HUGE_ERROR_BYTES)
    await response.write(b'"}}')
    return response


async def _sse(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(chunk("first"))
    return response


async def _endless_line(request: web.Request) -> web.StreamResponse:
    response = await _sse(request)
    await _filler(response, b'data: {"choices": [{"delta": {"content": "', ENDLESS_BYTES)
    return response


async def _endless_event(request: web.Request) -> web.StreamResponse:
    """Short `data:` lines, never the blank line that ends the event."""
    response = await _sse(request)
    await _filler(response, b"data: x\n", ENDLESS_BYTES, b"data: x\n")
    return response


async def _no_headers(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(SILENCE)
    return web.Response(body=completion("too late"), content_type="application/json")


async def _silent_stream(request: web.Request) -> web.StreamResponse:
    response = await _sse(request)
    await asyncio.sleep(SILENCE)
    return response


async def _trickle(request: web.Request) -> web.StreamResponse:
    """A stream that never goes quiet for long but never ends either (whole-request bound)."""
    response = await _sse(request)
    for _ in range(int(SILENCE / 0.1)):
        await asyncio.sleep(0.1)
        await response.write(chunk("."))
    return response


async def _negative_usage(request: web.Request) -> web.StreamResponse:
    usage = {"prompt_tokens": -5, "completion_tokens": -7, "total_tokens": -12}
    return web.Response(body=completion("odd", usage), content_type="application/json")


ATTACKS: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = {
    "gzip-bomb": _gzip_bomb,
    "huge-json": _huge_json,
    "huge-error": _huge_error,
    "endless-line": _endless_line,
    "endless-event": _endless_event,
    "no-headers": _no_headers,
    "silent-stream": _silent_stream,
    "trickle": _trickle,
    "negative-usage": _negative_usage,
}
