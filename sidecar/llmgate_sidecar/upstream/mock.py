"""The built-in `mock` model: deterministic OpenAI-format answers, served in-process.

For demos, tests and load tests: no network, no key. The reply is the configured text or an
echo of the last user message; latency before the first byte and the delay between stream
chunks are configurable (`ProviderSecret.spec.mock`). It speaks OpenAI's wire format so the
OpenAI adapter translates it like any upstream, through the same routing path.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from llmgate_contract.config import MockOptions
from multidict import CIMultiDict

from llmgate_sidecar.upstream.providers.base import UpstreamRequest
from llmgate_sidecar.wire.sse import Event

_JSON_HEADERS: Mapping[str, str] = CIMultiDict({"content-type": "application/json"})
_SSE_HEADERS: Mapping[str, str] = CIMultiDict({"content-type": "text/event-stream"})


def reply_for(body: Mapping[str, Any], options: MockOptions) -> str:
    if options.reply is not None:
        return options.reply
    text = ""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            text = str(content or "")
            break
    words = text.split()
    echo = " ".join(words[:40]) + (" …" if len(words) > 40 else "")
    return f"This is the llmgate mock model. You said: {echo}" if echo else \
        "This is the llmgate mock model."


def _count_tokens(text: str) -> int:
    return max(1, len(text.split()))


def _prompt_tokens(body: Mapping[str, Any]) -> int:
    return sum(_count_tokens(str(m.get("content") or "")) for m in body.get("messages") or []
               if isinstance(m, dict))


class MockResponse:
    __slots__ = ("_body", "_options", "headers", "status")

    def __init__(self, status: int, body: dict[str, Any], options: MockOptions) -> None:
        self.status = status
        self._body = body
        self._options = options
        self.headers = _SSE_HEADERS if body.get("stream") else _JSON_HEADERS

    async def read(self) -> bytes:
        if self.status != 200:
            return orjson.dumps({"error": {"message": "mock: request body is not a JSON "
                                                      "object", "type": "invalid_request_error",
                                           "code": None, "param": None}})
        text = reply_for(self._body, self._options)
        prompt, completion = _prompt_tokens(self._body), _count_tokens(text)
        return orjson.dumps({
            "id": f"chatcmpl-mock-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
            "created": int(time.time()), "model": self._body.get("model", "mock"),
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
        })

    async def events(self) -> AsyncIterator[Event]:
        text = reply_for(self._body, self._options)
        words = text.split(" ")
        step = self._options.words_per_chunk
        base = {"id": f"chatcmpl-mock-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion.chunk", "created": int(time.time()),
                "model": self._body.get("model", "mock")}
        first = {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                      "finish_reason": None}]}
        yield Event(orjson.dumps(first).decode())
        for i in range(0, len(words), step):
            if self._options.chunk_delay_ms and i:
                await asyncio.sleep(self._options.chunk_delay_ms / 1000)
            piece = " ".join(words[i:i + step]) + (" " if i + step < len(words) else "")
            chunk = {**base, "choices": [{"index": 0, "delta": {"content": piece},
                                          "finish_reason": None}]}
            yield Event(orjson.dumps(chunk).decode())
        last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        yield Event(orjson.dumps(last).decode())
        prompt, completion = _prompt_tokens(self._body), _count_tokens(text)
        usage = {**base, "choices": [], "usage": {"prompt_tokens": prompt,
                                                  "completion_tokens": completion,
                                                  "total_tokens": prompt + completion}}
        yield Event(orjson.dumps(usage).decode())
        yield Event("[DONE]")

    async def chunks(self) -> AsyncIterator[bytes]:
        yield await self.read()

    def release(self) -> None:
        return None


class MockTransport:
    def __init__(self, options: MockOptions | None) -> None:
        self._options = options or MockOptions()

    async def send(self, request: UpstreamRequest, *, timeout: float | None,
                   provider: str, model: str) -> MockResponse:
        if self._options.latency_ms:
            await asyncio.sleep(self._options.latency_ms / 1000)
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return MockResponse(400, {}, self._options)
        return MockResponse(200, body, self._options)

    async def close(self) -> None:
        return None
