"""A fake OpenAI serving the non-chat paths the gateway passes through, on loopback.

`/v1/responses` (JSON, or SSE events `response.created` ... `response.completed` when
`stream` is set), `/v1/completions`, `/v1/images/generations`, `/v1/audio/speech` (binary
MP3 bytes), `/v1/audio/transcriptions` and `/v1/audio/translations` (multipart in, JSON
out) and `/v1/moderations`, in OpenAI's documented shapes. Every request is recorded with
its raw body and headers.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from tests.fakes import serve_on_loopback

SPEECH = bytes(range(256)) * 8  # stands for MP3 frames: any bytes must arrive unchanged
RESPONSE_EVENTS = [
    ("response.created", {"type": "response.created",
                          "response": {"id": "resp_1", "status": "in_progress"}}),
    ("response.output_text.delta", {"type": "response.output_text.delta", "delta": "Hi"}),
    ("response.output_text.delta", {"type": "response.output_text.delta", "delta": " there"}),
    ("response.completed", {"type": "response.completed", "response": {
        "id": "resp_1", "status": "completed",
        "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}}}),
]


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    raw: bytes


def _json(path: str, model: str) -> dict[str, Any]:
    if path == "/v1/responses":
        return {"id": "resp_1", "object": "response", "model": model, "status": "completed",
                "output": [{"type": "message", "role": "assistant", "content": [
                    {"type": "output_text", "text": "Hi there", "annotations": []}]}],
                "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}}
    if path == "/v1/completions":
        return {"id": "cmpl-1", "object": "text_completion", "model": model, "created": 1,
                "choices": [{"text": " world", "index": 0, "finish_reason": "stop",
                             "logprobs": None}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
    if path == "/v1/images/generations":
        return {"created": 1, "data": [{"b64_json": "aW1hZ2U="}]}
    if path == "/v1/audio/transcriptions":
        return {"text": "hello from the audio"}
    if path == "/v1/audio/translations":
        return {"text": "hello, translated to English"}
    return {"id": "modr-1", "model": model, "results": [
        {"flagged": False, "categories": {}, "category_scores": {}}]}


class FakeOpenAIPaths:
    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.speech_gate: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> FakeOpenAIPaths:
        app = web.Application()
        for path in ("responses", "completions", "images/generations", "audio/speech",
                     "audio/transcriptions", "audio/translations", "moderations"):
            app.router.add_post(f"/v1/{path}", self._handle)
        self._runner, port = await serve_on_loopback(app, shutdown_timeout=0.5)
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.seen.append(Seen(request.path, dict(request.headers), raw))
        if request.path in ("/v1/audio/transcriptions", "/v1/audio/translations"):
            form = await _form(request, raw)
            return web.json_response({**_json(request.path, form["model"]),
                                      "echo_model": form["model"]})
        body = orjson.loads(raw)
        if request.path == "/v1/audio/speech":
            if self.speech_gate is None:
                return web.Response(body=SPEECH, content_type="audio/mpeg")
            # Half now, the rest once the test opens the gate: proves nobody buffers it.
            response = web.StreamResponse(headers={"Content-Type": "audio/mpeg"})
            await response.prepare(request)
            await response.write(SPEECH[:1024])
            await self.speech_gate.wait()
            await response.write(SPEECH[1024:])
            await response.write_eof()
            return response
        if request.path == "/v1/responses" and body.get("stream"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            for name, data in RESPONSE_EVENTS:
                await response.write(f"event: {name}\ndata: ".encode() + orjson.dumps(data)
                                     + b"\n\n")
            await response.write_eof()
            return response
        return web.json_response(_json(request.path, body["model"]))


async def _form(request: web.Request, raw: bytes) -> dict[str, str]:
    """The text fields of the multipart body (the file part is checked by the tests)."""
    boundary = request.content_type and request.headers["Content-Type"].split("boundary=")[1]
    fields = {}
    for part in raw.split(b"--" + boundary.strip('"').encode()):
        head, _, value = part.partition(b"\r\n\r\n")
        if b'name="' in head and b"filename=" not in head:
            name = head.split(b'name="')[1].split(b'"')[0].decode()
            fields[name] = value.removesuffix(b"\r\n").decode()
    return fields
