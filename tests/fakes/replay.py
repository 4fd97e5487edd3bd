"""A fake provider that replays wire transcripts from `tests/data/providers/<provider>/`.

A real aiohttp server on loopback. Each request takes the next scripted `Reply` (else the
provider module's default for that request) and is answered byte for byte from a transcript
file: a JSON body, an SSE stream written event by event, or a binary frame file. A reply can
also cut the connection after N stream events, reset before answering, or send raw bytes.
Every request is recorded (path, query, headers, body) for the tests to assert on.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
DATA = Path(__file__).resolve().parent.parent / "data" / "providers"


def transcript(provider: str, name: str) -> bytes:
    return (DATA / provider / name).read_bytes()


def transcript_json(provider: str, name: str) -> Any:
    return orjson.loads(transcript(provider, name))


def sse_events(raw: bytes) -> list[bytes]:
    """Split an SSE transcript into its events (each with its blank-line terminator)."""
    return [part + b"\n\n" for part in raw.replace(b"\r\n", b"\n").split(b"\n\n") if part.strip()]


@dataclass
class Reply:
    file: str = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    cut_after: int | None = None  # stream: close the connection after this many events
    reset: bool = False  # close the connection without answering
    raw: bytes | None = None  # answer these bytes instead of a file
    frames: Callable[[bytes], list[bytes]] = sse_events  # how a stream file splits up
    content_type: str = ""
    provider: str = ""  # the transcript directory, when not the fake's own


@dataclass
class Recorded:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    raw: bytes


class ReplayUpstream:
    def __init__(self, provider: str, paths: list[str],
                 default: Callable[[web.Request, Any], Reply],
                 extra: dict[str, Handler] | None = None,
                 check: Callable[[web.Request, bytes], web.Response | None] | None = None
                 ) -> None:
        self.provider = provider
        self._extra = extra or {}
        self._check = check  # e.g. verify a request signature; a response rejects it
        self.script: deque[Reply] = deque()
        self.requests: list[Recorded] = []
        self.paths, self._default = paths, default
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> ReplayUpstream:
        app = web.Application()
        for path in self.paths:
            app.router.add_post(path, self._handle)
        for path, handler in self._extra.items():  # e.g. an OAuth token endpoint
            app.router.add_post(path, handler)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def bodies(self) -> list[Any]:
        return [r.body for r in self.requests]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        self.requests.append(Recorded(request.path, dict(request.query), dict(request.headers),
                                      body, raw))
        rejection = self._check(request, raw) if self._check else None
        if rejection is not None:
            return rejection
        reply = self.script.popleft() if self.script else self._default(request, body)
        if reply.reset:
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        data = reply.raw if reply.raw is not None else transcript(reply.provider or self.provider,
                                                                  reply.file)
        streaming = reply.file.endswith((".sse", ".eventstream")) or reply.cut_after is not None
        if reply.status != 200 or not streaming:
            return web.Response(body=data, status=reply.status, headers=reply.headers,
                                content_type=reply.content_type or "application/json")
        return await self._stream(request, reply, data)

    async def _stream(self, request: web.Request, reply: Reply, data: bytes
                      ) -> web.StreamResponse:
        content_type = reply.content_type or "text/event-stream"
        response = web.StreamResponse(headers={"Content-Type": content_type, **reply.headers})
        await response.prepare(request)
        for i, frame in enumerate(reply.frames(data)):
            if reply.cut_after is not None and i == reply.cut_after:
                assert request.transport is not None
                request.transport.close()
                return response
            await response.write(frame)
            await asyncio.sleep(0)  # one write per event, as a real upstream flushes them
        await response.write_eof()
        return response
