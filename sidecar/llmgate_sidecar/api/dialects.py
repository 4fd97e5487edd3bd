"""How an inbound API speaks: the shape of its answers, stream events and error envelopes.

Chat (the `ChatEndpoint`s of `api.endpoints`) always works on OpenAI-shaped bodies and
chunks; a `Dialect` turns what it produced into what the client's SDK expects. `OPENAI` is
the identity; `messages_api.ANTHROPIC` is the Anthropic Messages dialect. Dialects are pure:
no I/O, no state beyond one stream's `StreamTranslator`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Protocol

import orjson

from llmgate_sidecar.errors import GatewayError
from llmgate_sidecar.upstream.providers.base import Usage
from llmgate_sidecar.wire.sse import SSEParser, encode


class StreamTranslator(Protocol):
    def feed(self, data: bytes, usage: Usage | None) -> bytes:
        """OpenAI chunk SSE bytes (one or more events) -> bytes for the client."""

    def finish(self) -> bytes:
        """The stream ended well: whatever closes it in this dialect."""

    def error(self, error_type: str, code: str, message: str) -> bytes:
        """The in-band error event that ends a committed stream that failed."""


class Dialect(Protocol):
    api: str  # names the inbound API for the cache key

    def completion(self, payload: bytes) -> bytes:
        """An OpenAI `chat.completion` body -> this dialect's response body."""

    def translator(self, model: str) -> StreamTranslator: ...

    def envelope(self, exc: GatewayError) -> dict[str, Any]: ...


class ChunkTranslator(ABC):
    """The reading half of a translating `StreamTranslator`: chat's chunk events parsed one
    by one (`[DONE]` skipped) and handed to `_chunk`, which a subclass implements to write
    its dialect's events (with `finish` and `error`); the usage learnt so far is in
    `_usage`."""

    def __init__(self) -> None:
        self._parser = SSEParser()
        self._usage: Usage | None = None

    def feed(self, data: bytes, usage: Usage | None) -> bytes:
        if usage is not None:
            self._usage = usage
        out = []
        for event in self._parser.feed(data):
            if event.data == "[DONE]":
                continue
            chunk = orjson.loads(event.data)
            if isinstance(chunk, dict):
                out.append(self._chunk(chunk))
        return b"".join(out)

    @abstractmethod
    def _chunk(self, chunk: dict[str, Any]) -> bytes:
        """One parsed chat chunk -> this dialect's events for it."""


class _OpenAIStream:
    def feed(self, data: bytes, usage: Usage | None) -> bytes:
        return data

    def finish(self) -> bytes:
        return b""

    def error(self, error_type: str, code: str, message: str) -> bytes:
        return encode({"error": {"type": error_type, "code": code, "message": message,
                                 "param": None}})


class OpenAIDialect:
    """The OpenAI chat-completions API: chat's own shape, passed through untouched."""

    api = "chat"

    def completion(self, payload: bytes) -> bytes:
        return payload

    def translator(self, model: str) -> StreamTranslator:
        return _OpenAIStream()

    def envelope(self, exc: GatewayError) -> dict[str, Any]:
        return exc.envelope()


OPENAI = OpenAIDialect()
