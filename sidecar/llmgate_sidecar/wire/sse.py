"""Server-sent events: an incremental parser for upstream streams and the downstream encoder.

Used by the transports (upstream bytes -> events) and the app (chunks -> bytes). Follows the
WHATWG event-stream rules that matter for LLM APIs: `event:`/`data:` fields, multi-line data,
comments, CRLF or LF line ends, events split at any byte boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson


@dataclass(frozen=True, slots=True)
class Event:
    data: str
    event: str = "message"


class SSEParser:
    """Feed bytes as they arrive; get complete events back. Holds only the partial tail."""

    __slots__ = ("_buffer", "_data", "_event")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event = ""

    def feed(self, chunk: bytes) -> list[Event]:
        # One split per chunk rather than a find-and-slice per line (which copied the rest of
        # the buffer once per line); the unterminated tail stays buffered.
        lines = (self._buffer + chunk).split(b"\n") if self._buffer else chunk.split(b"\n")
        self._buffer = lines.pop()
        events: list[Event] = []
        for raw in lines:
            event = self._line(raw.rstrip(b"\r").decode("utf-8", "replace"))
            if event is not None:
                events.append(event)
        return events

    def close(self) -> list[Event]:
        """End of stream: a final event without its blank line still counts."""
        events = self.feed(b"\n") if self._buffer else []
        if self._data:
            events.append(Event("\n".join(self._data), self._event or "message"))
            self._data, self._event = [], ""
        return events

    def _line(self, line: str) -> Event | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = Event("\n".join(self._data), self._event or "message")
            self._data, self._event = [], ""
            return event
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        return None


def encode(payload: object, event: str | None = None) -> bytes:
    """One SSE event carrying `payload` as compact JSON."""
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + orjson.dumps(payload) + b"\n\n"


DONE = b"data: [DONE]\n\n"
