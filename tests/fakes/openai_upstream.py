"""A programmable fake OpenAI-compatible upstream: a real aiohttp server on loopback.

Speaks the documented chat-completions wire format (JSON and SSE) and fails on demand:
each request takes the next scripted `Behaviour` (or the default), so a test states exactly
what the upstream does: an HTTP error with headers, a reset connection, a slow first byte, a
stream cut mid-way, a stream that stalls, an error event inside a 200 stream, a malformed
body or stream event. It also serves `/v1/embeddings` and reports what it saw: streams
open now, and streams whose client (the gateway) closed the connection before the end
(`disconnects`).
"""

from __future__ import annotations

import asyncio
import base64
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fakes import serve_on_loopback


@dataclass
class Behaviour:
    # ok | status | reset | cut | stall | error_event | malformed | malformed_event | tool_call
    kind: str = "ok"
    status: int = 200
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # before the response starts: a slow first byte
    chunks_before: int = 2  # chunks written before cut / stall / error_event / gate
    content: str = "Hello from the fake upstream"
    chunk_delay: float = 0.0  # between stream chunks
    stall: float = 60.0  # how long a `stall` stream stays silent
    gate: asyncio.Event | None = None  # after `chunks_before` chunks, wait until it is set


class FakeOpenAI:
    def __init__(self) -> None:
        self.script: deque[Behaviour] = deque()
        self.default = Behaviour()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.streams_open = 0
        self.disconnects = 0
        self.chunks_sent = 0  # content chunks of streams written successfully
        self.disconnected = asyncio.Event()
        # Answer every request that offers tools with the scripted get_weather call, as the
        # recorded fakes of the other providers do.
        self.tool_calls_when_offered = False
        # Validate `messages` as api.openai.com does (`schema_error`).
        self.strict_messages = False

    async def start(self) -> FakeOpenAI:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        # Handler cancellation: a stalled stream learns at once that its client went away.
        self._runner, port = await serve_on_loopback(
            app, shutdown_timeout=0.5, handler_cancellation=True)
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        refused = schema_error(body) if self.strict_messages else None
        if refused is not None:
            return web.json_response(refused, status=400)
        b = self.script.popleft() if self.script else self.default
        if b.delay:
            await asyncio.sleep(b.delay)
        if b.kind == "status":
            return web.json_response(
                b.body or {"error": {"message": "boom", "type": "server_error"}},
                status=b.status, headers=b.headers)
        if b.kind == "reset":
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        if b.kind == "malformed":
            return web.Response(body=b"{\"choices\": [", content_type="application/json")
        if b.kind == "tool_call" or (self.tool_calls_when_offered and body.get("tools")):
            return await self._tool_call(request, body)
        if body.get("stream"):
            self.streams_open += 1
            try:
                return await self._stream(request, body, b)
            except (asyncio.CancelledError, ConnectionResetError):
                self.disconnects += 1
                self.disconnected.set()
                raise
            finally:
                self.streams_open -= 1
        return web.json_response(completion(body, b.content))

    async def _embeddings(self, request: web.Request) -> web.Response:
        """OpenAI's embeddings list: one 3-dim vector per input, base64 when asked."""
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        b = self.script.popleft() if self.script else self.default
        if b.kind == "status":
            return web.json_response(b.body or {"error": {"message": "boom"}}, status=b.status,
                                     headers=b.headers)
        inputs = [body["input"]] if isinstance(body["input"], str) else body["input"]
        data = []
        for i, text in enumerate(inputs):
            values = [float(len(str(text))), 0.5, -0.25]
            vector: Any = values
            if body.get("encoding_format") == "base64":
                vector = base64.b64encode(struct.pack("<3f", *values)).decode()
            data.append({"object": "embedding", "index": i, "embedding": vector})
        tokens = sum(len(str(t).split()) for t in inputs)
        return web.json_response({"object": "list", "data": data, "model": body["model"],
                                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def _tool_call(self, request: web.Request,
                         body: dict[str, Any]) -> web.StreamResponse:
        """Text, then a get_weather call for Paris, as OpenAI answers (JSON or streamed)."""
        if not body.get("stream"):
            answer = completion(body, "Checking.")
            answer["choices"][0]["finish_reason"] = "tool_calls"
            answer["choices"][0]["message"]["tool_calls"] = [{
                "id": "call_fake_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]
            return web.json_response(answer)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        deltas: list[dict[str, Any]] = [
            {"role": "assistant", "content": "Checking."},
            {"tool_calls": [{"index": 0, "id": "call_fake_1", "type": "function",
                             "function": {"name": "get_weather", "arguments": ""}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}]
        for delta in deltas:
            event = {**chunk(body, None), "choices": [{"index": 0, "delta": delta,
                                                        "finish_reason": None}]}
            await response.write(b"data: " + orjson.dumps(event) + b"\n\n")
        await response.write(b"data: " + orjson.dumps(
            chunk(body, None, finish="tool_calls")) + b"\n\n")
        if (body.get("stream_options") or {}).get("include_usage"):
            await response.write(b"data: " + orjson.dumps(
                {**chunk(body, None), "choices": [], "usage": usage(body, "Checking.")})
                + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _stream(self, request: web.Request, body: dict[str, Any],
                      b: Behaviour) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if b.kind == "malformed_event":
            await response.write(b"data: {not json\n\n")
            await response.write_eof()
            return response
        words = b.content.split(" ")
        for i, word in enumerate(words):
            if i == b.chunks_before:
                if b.kind == "stall":
                    await asyncio.sleep(b.stall)
                if b.gate is not None:
                    await b.gate.wait()
            if b.chunk_delay and i:
                await asyncio.sleep(b.chunk_delay)
            if b.kind == "cut" and i == b.chunks_before:
                assert request.transport is not None
                request.transport.close()
                return response
            if b.kind == "error_event" and i == b.chunks_before:
                await response.write(b"data: " + orjson.dumps(
                    {"error": {"message": "overloaded", "type": "server_error"}}) + b"\n\n")
                await response.write_eof()
                return response
            piece = word + (" " if i + 1 < len(words) else "")
            await response.write(b"data: " + orjson.dumps(chunk(body, piece)) + b"\n\n")
            self.chunks_sent += 1
        await response.write(b"data: " + orjson.dumps(chunk(body, None, finish="stop")) + b"\n\n")
        if (body.get("stream_options") or {}).get("include_usage"):
            await response.write(b"data: " + orjson.dumps(
                {**chunk(body, None), "choices": [], "usage": usage(body, b.content)}) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


# The fields of each message role and of a tool call in OpenAI's chat-completions request
# (API reference, "Create chat completion": messages).
MESSAGE_FIELDS = {
    "system": {"role", "content", "name"},
    "developer": {"role", "content", "name"},
    "user": {"role", "content", "name"},
    "assistant": {"role", "content", "name", "refusal", "audio", "tool_calls",
                  "function_call"},
    "tool": {"role", "content", "tool_call_id"},
    "function": {"role", "content", "name"},
}
TOOL_CALL_FIELDS = {"id", "type", "function", "custom"}


def schema_error(body: Any) -> dict[str, Any] | None:
    """The 400 body api.openai.com (and Azure OpenAI) answer for a message or tool call
    with a field the schema does not have, or None when `messages` validates."""
    messages = body.get("messages") if isinstance(body, dict) else None
    for i, message in enumerate(messages if isinstance(messages, list) else []):
        allowed = MESSAGE_FIELDS.get(message.get("role"), set())
        where, extra = f"messages.{i}", sorted(set(message) - allowed)
        for j, call in enumerate(message.get("tool_calls") or []):
            if not extra and set(call) - TOOL_CALL_FIELDS:
                where, extra = f"messages.{i}.tool_calls.{j}", sorted(
                    set(call) - TOOL_CALL_FIELDS)
        if extra:
            names = ", ".join(repr(name) for name in extra)
            verb = "was" if len(extra) == 1 else "were"
            return {"error": {"message": f"Additional properties are not allowed ({names} "
                                         f"{verb} unexpected) - '{where}'",
                              "type": "invalid_request_error", "param": None, "code": None}}
    return None


def usage(body: dict[str, Any], content: str) -> dict[str, int]:
    prompt = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
    completion_tokens = len(content.split())
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens}


def completion(body: dict[str, Any], content: str) -> dict[str, Any]:
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": content}}],
            "usage": usage(body, content)}


def chunk(body: dict[str, Any], content: str | None, finish: str | None = None) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
