"""AWS event-stream framing (`application/vnd.amazon.eventstream`), parsed incrementally.

Used by the HTTP transport for Bedrock's ConverseStream, beside `sse.SSEParser` and with the
same interface: feed bytes as they arrive, get whole `Event`s back (frames split at any byte
boundary are held until complete). Each frame becomes `Event(data=<payload text>,
event=<:event-type>)`; exception and error frames become `event="exception:<type>"` /
`"error:<code>"`. A corrupt frame (bad CRC or length) raises `EventStreamError`.
"""

from __future__ import annotations

import struct
import zlib

import orjson

from llmgate_sidecar.wire.sse import Event

_PRELUDE = 12  # total length, headers length, prelude CRC: three big-endian uint32
_MAX_FRAME = 16 * 1024 * 1024
# Fixed value sizes of the header types that are not length-prefixed (bool types have none).
_FIXED = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}


class EventStreamError(ValueError):
    """The bytes are not a valid event stream (a broken or truncated frame)."""


class EventStreamParser:
    __slots__ = ("_buffer", "_max_frame")

    def __init__(self, max_frame: int = _MAX_FRAME) -> None:
        self._buffer = b""
        self._max_frame = max_frame

    def feed(self, chunk: bytes) -> list[Event]:
        self._buffer += chunk
        events = []
        while len(self._buffer) >= _PRELUDE:
            total, headers_length, prelude_crc = struct.unpack_from(">III", self._buffer)
            if zlib.crc32(self._buffer[:8]) != prelude_crc or not 16 <= total <= _MAX_FRAME:
                raise EventStreamError("event-stream frame prelude is corrupt")
            if total > self._max_frame:
                raise EventStreamError(f"an event-stream frame of {total} bytes is larger "
                                       f"than {self._max_frame}")
            if len(self._buffer) < total:
                break
            frame, self._buffer = self._buffer[:total], self._buffer[total:]
            (message_crc,) = struct.unpack_from(">I", frame, total - 4)
            if zlib.crc32(frame[:-4]) != message_crc:
                raise EventStreamError("event-stream frame checksum does not match")
            headers = parse_headers(frame[_PRELUDE:_PRELUDE + headers_length])
            payload = frame[_PRELUDE + headers_length:-4].decode("utf-8", "replace")
            events.append(to_event(headers, payload))
        return events

    def close(self) -> list[Event]:
        if self._buffer:
            raise EventStreamError("event stream ended inside a frame")
        return []


def to_event(headers: dict[str, object], payload: str) -> Event:
    kind = headers.get(":message-type", "event")
    if kind == "exception":
        return Event(payload, f"exception:{headers.get(':exception-type', 'unknown')}")
    if kind == "error":
        message = orjson.dumps({"message": headers.get(":error-message", "")}).decode()
        return Event(message, f"error:{headers.get(':error-code', 'unknown')}")
    return Event(payload, str(headers.get(":event-type", "message")))


def parse_headers(raw: bytes) -> dict[str, object]:
    headers: dict[str, object] = {}
    at = 0
    try:
        while at < len(raw):
            name_length = raw[at]
            name = raw[at + 1:at + 1 + name_length].decode()
            at += 1 + name_length
            kind = raw[at]
            at += 1
            if kind in (6, 7):  # bytes, string: uint16 length prefix
                (length,) = struct.unpack_from(">H", raw, at)
                value = raw[at + 2:at + 2 + length]
                headers[name] = value.decode() if kind == 7 else value
                at += 2 + length
            elif kind in _FIXED:
                headers[name] = kind == 0 if kind in (0, 1) else raw[at:at + _FIXED[kind]]
                at += _FIXED[kind]
            else:
                raise EventStreamError(f"unknown event-stream header type {kind}")
    except (IndexError, struct.error, UnicodeDecodeError):
        raise EventStreamError("event-stream headers are truncated") from None
    return headers


def encode_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One frame with string headers: for fakes and tests (the sidecar never sends frames)."""
    raw = b"".join(bytes([len(k)]) + k.encode() + b"\x07" + struct.pack(">H", len(v))
                   + v.encode() for k, v in headers.items())
    total = _PRELUDE + len(raw) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + raw + payload
    return body + struct.pack(">I", zlib.crc32(body))
