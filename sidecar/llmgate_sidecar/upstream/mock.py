"""The built-in `mock` model: deterministic OpenAI-format answers, served in-process.

For demos, tests and load tests: no network, no key. It serves chat completions (text, a
tool call when `tool_choice` asks, JSON for `response_format`; JSON or streamed), embeddings
and legacy completions in OpenAI's shapes (what it answers: `upstream.mock_answers`); other
paths are never sent here (its row in `llmgate_contract.providers.KINDS` offers none), and
anything else is a 404. Latency before the first byte and the delay between stream chunks
are configurable (`ProviderSecret.spec.mock`). It speaks OpenAI's wire format so the OpenAI adapter
translates it like any upstream, through the same routing path.
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

from llmgate_sidecar.upstream.mock_answers import (
    completion_text,
    content_for,
    count_tokens,
    embeddings,
    tool_call,
)
from llmgate_sidecar.upstream.providers.base import UpstreamRequest
from llmgate_sidecar.wire.sse import Event

_JSON_HEADERS: Mapping[str, str] = CIMultiDict({"content-type": "application/json"})
_SSE_HEADERS: Mapping[str, str] = CIMultiDict({"content-type": "text/event-stream"})


def _prompt_tokens(body: Mapping[str, Any]) -> int:
    return sum(count_tokens(str(m.get("content") or "")) for m in body.get("messages") or []
               if isinstance(m, dict))


def operation_of(url: str) -> str | None:
    """Which OpenAI endpoint a request to the mock is for (the adapter built its URL)."""
    for operation in ("chat/completions", "embeddings", "completions"):
        if url.endswith("/" + operation) or url == operation:
            return operation
    return None


def _error(message: str) -> bytes:
    return orjson.dumps({"error": {"message": f"mock: {message}", "code": None, "param": None,
                                   "type": "invalid_request_error"}})


class MockResponse:
    __slots__ = ("_body", "_id", "_operation", "_options", "headers", "status")

    def __init__(self, status: int, body: dict[str, Any], options: MockOptions,
                 operation: str | None = "chat/completions") -> None:
        self.status = status
        self._body = body
        self._options = options
        self._operation = operation
        self._id = uuid.uuid4().hex[:24]
        self.headers = _SSE_HEADERS if status == 200 and body.get("stream") else _JSON_HEADERS

    async def read(self) -> bytes:
        if self.status != 200:
            return _error("request body is not a JSON object" if self._operation else
                          "the mock model serves chat, embeddings and completions only")
        if self._operation == "embeddings":
            return orjson.dumps(embeddings(self._body))
        if self._operation == "completions":
            return orjson.dumps(self._completion())
        call = tool_call(self._body)
        text = content_for(self._body, self._options)
        message: dict[str, Any] = {"role": "assistant", "content": None if call else text}
        if call:
            message["tool_calls"] = [call]
        prompt = _prompt_tokens(self._body)
        completion = count_tokens(call["function"]["arguments"] if call else text)
        return orjson.dumps({
            "id": f"chatcmpl-mock-{self._id}", "object": "chat.completion",
            "created": int(time.time()), "model": self._body.get("model", "mock"),
            "choices": [{"index": 0, "finish_reason": "tool_calls" if call else "stop",
                         "logprobs": None, "message": message}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
        })

    def _completion(self) -> dict[str, Any]:
        text, prompt = completion_text(self._body, self._options)
        completion = count_tokens(text)
        return {"id": f"cmpl-mock-{self._id}", "object": "text_completion",
                "created": int(time.time()), "model": self._body.get("model", "mock"),
                "choices": [{"index": 0, "text": text, "logprobs": None,
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                          "total_tokens": prompt + completion}}

    def _pieces(self, text: str) -> list[str]:
        words, step = text.split(" "), self._options.words_per_chunk
        return [" ".join(words[i:i + step]) + (" " if i + step < len(words) else "")
                for i in range(0, len(words), step)]

    async def head(self, limit: int) -> bytes:
        return (await self.read())[:limit]

    async def events(self) -> AsyncIterator[Event]:
        if self._operation == "completions":
            async for event in self._completion_events():
                yield event
            return
        base = {"id": f"chatcmpl-mock-{self._id}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": self._body.get("model", "mock")}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> Event:
            return Event(orjson.dumps({**base, "choices": [
                {"index": 0, "delta": delta, "finish_reason": finish}]}).decode())
        yield chunk({"role": "assistant", "content": ""})
        call = tool_call(self._body)
        text = call["function"]["arguments"] if call else content_for(self._body,
                                                                       self._options)
        for i, piece in enumerate(self._pieces(text)):
            if self._options.chunk_delay_ms and i:
                await asyncio.sleep(self._options.chunk_delay_ms / 1000)
            if call is None:
                yield chunk({"content": piece})
                continue
            entry: dict[str, Any] = {"index": 0, "function": {"arguments": piece}}
            if i == 0:
                entry.update(id=call["id"], type="function")
                entry["function"]["name"] = call["function"]["name"]
            yield chunk({"tool_calls": [entry]})
        yield chunk({}, "tool_calls" if call else "stop")
        prompt, completion = _prompt_tokens(self._body), count_tokens(text)
        yield Event(orjson.dumps({**base, "choices": [], "usage": {
            "prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}}).decode())
        yield Event("[DONE]")

    async def _completion_events(self) -> AsyncIterator[Event]:
        whole = self._completion()
        base = {k: whole[k] for k in ("id", "object", "created", "model")}
        for i, piece in enumerate(self._pieces(whole["choices"][0]["text"])):
            if self._options.chunk_delay_ms and i:
                await asyncio.sleep(self._options.chunk_delay_ms / 1000)
            yield Event(orjson.dumps({**base, "choices": [
                {"index": 0, "text": piece, "logprobs": None, "finish_reason": None}]}).decode())
        yield Event(orjson.dumps({**base, "choices": [
            {"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}],
            "usage": whole["usage"]}).decode())
        yield Event("[DONE]")

    async def chunks(self) -> AsyncIterator[bytes]:
        if self.headers is _SSE_HEADERS:
            async for event in self.events():
                yield b"data: " + event.data.encode() + b"\n\n"
            return
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
        operation = operation_of(request.url)
        if operation is None:
            return MockResponse(404, {}, self._options, None)
        if not isinstance(body, dict):
            return MockResponse(400, {}, self._options, operation)
        return MockResponse(200, body, self._options, operation)

    async def close(self) -> None:
        return None
