"""Helpers for adapter unit tests: run a transcript through a decoder, read the chunks back."""

from __future__ import annotations

from typing import Any

import orjson
from llmgate_contract.config import Provider, Target
from llmgate_sidecar.upstream.providers.base import StreamDecoder, StreamItem
from llmgate_sidecar.wire.sse import Event, SSEParser


def target(model: str = "up-model", provider: str = "up") -> Target:
    return Target(provider=provider, model=model)


def provider_config(kind: str, name: str = "up", **fields: Any) -> Provider:
    return Provider.from_data({"name": name, "kind": kind, **fields})


def events_of(raw: bytes) -> list[Event]:
    parser = SSEParser()
    return parser.feed(raw) + parser.close()


def decode(decoder: StreamDecoder, events: list[Event]) -> list[StreamItem]:
    """Feed every event, then finish; what routing does with a complete upstream stream."""
    return [decoder.feed(e) for e in events] + [decoder.finish()]


def chunks(items: list[StreamItem]) -> list[Any]:
    """The client-visible SSE payloads, parsed ("[DONE]" kept as a string)."""
    out: list[Any] = []
    for event in events_of(b"".join(i.downstream for i in items)):
        out.append(event.data if event.data == "[DONE]" else orjson.loads(event.data))
    return out


def text(chunk_list: list[Any]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or ""
                   for c in chunk_list if isinstance(c, dict) and c["choices"])


def tool_arguments(chunk_list: list[Any]) -> str:
    return "".join(call["function"].get("arguments", "")
                   for c in chunk_list if isinstance(c, dict) and c["choices"]
                   for call in c["choices"][0]["delta"].get("tool_calls") or [])
