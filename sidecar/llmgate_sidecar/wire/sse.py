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


class SSEError(ValueError):
    """A line or event larger than the parser's bound: the stream cannot be trusted further."""


class SSEParser:
    """Feed bytes as they arrive; get complete events back. Holds only the partial tail, and
    never more than `max_event` bytes of it (one unterminated line, or the data lines of one
    unfinished event): past that `feed` raises `SSEError`."""

    __slots__ = ("_buffer", "_data", "_event", "_max", "_size")

    def __init__(self, max_event: int = 1024 * 1024) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event = ""
        self._max = max_event
        self._size = 0  # characters of data lines in the unfinished event

    def feed(self, chunk: bytes) -> list[Event]:
        # One split per chunk rather than a find-and-slice per line (which copied the rest of
        # the buffer once per line); the unterminated tail stays buffered.
        lines = (self._buffer + chunk).split(b"\n") if self._buffer else chunk.split(b"\n")
        self._buffer = lines.pop()
        if len(self._buffer) > self._max:
            self._buffer = b""
            raise SSEError(f"a stream line is longer than {self._max} bytes")
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
            self._data, self._event, self._size = [], "", 0
        return events

    def _line(self, line: str) -> Event | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = Event("\n".join(self._data), self._event or "message")
            self._data, self._event, self._size = [], "", 0
            return event
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._size += len(value) + 1
            if self._size > self._max:
                self._data, self._size = [], 0
                raise SSEError(f"a stream event is larger than {self._max} bytes")
            self._data.append(value)
        elif field == "event":
            self._event = value
        return None


def encode(payload: object, event: str | None = None) -> bytes:
    """One SSE event carrying `payload` as compact JSON."""
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + orjson.dumps(payload) + b"\n\n"


DONE = b"data: [DONE]\n\n"
