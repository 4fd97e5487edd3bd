"""The fast fake OpenAI-compatible upstream the benchmark points every gateway at.

A raw asyncio HTTP/1.1 server (uvloop when installed) so it costs far less CPU per request
than any gateway in front of it. `POST .../chat/completions` answers a chat.completion as
JSON, or as SSE (chunked) when the body says `"stream": true`; the first byte, the chunk count
and the delay between chunks are set on the command line. Run by `run.py` as its own process;
it binds loopback only and never calls out.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from collections.abc import Coroutine
from typing import Any

import orjson

MODEL = "bench-model"
WORD = "lorem "


class Behaviour:
    """What every answer looks like; fixed for the life of the process."""

    def __init__(self, first_byte_ms: float, chunks: int, chunk_delay_ms: float,
                 words: int) -> None:
        self.first_byte = first_byte_ms / 1000
        self.chunks = max(1, chunks)
        self.chunk_delay = chunk_delay_ms / 1000
        content = (WORD * words).strip()
        self.json_body = orjson.dumps({
            "id": "chatcmpl-bench", "object": "chat.completion", "created": int(time.time()),
            "model": MODEL, "system_fingerprint": None,
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": words,
                      "total_tokens": 12 + words}})
        self.json_head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                          b"Content-Length: " + str(len(self.json_body)).encode() +
                          b"\r\nx-request-id: bench\r\n\r\n")
        self.sse_events = self._sse_events(words)

    def _sse_events(self, words: int) -> list[bytes]:
        def chunk(delta: dict[str, object], finish: str | None) -> bytes:
            return orjson.dumps({"id": "chatcmpl-bench", "object": "chat.completion.chunk",
                                 "created": 0, "model": MODEL, "choices": [
                                     {"index": 0, "delta": delta, "finish_reason": finish}]})
        per_chunk = max(1, words // self.chunks)
        events = [chunk({"role": "assistant", "content": WORD * per_chunk}, None)]
        events += [chunk({"content": WORD * per_chunk}, None) for _ in range(self.chunks - 1)]
        events.append(chunk({}, "stop"))
        return [b"data: " + e + b"\n\n" for e in events]


SSE_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
NOT_FOUND = (b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
             b"Content-Length: 2\r\n\r\n{}")


def http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def usage_event(words: int) -> bytes:
    body = orjson.dumps({"id": "chatcmpl-bench", "object": "chat.completion.chunk",
                         "created": 0, "model": MODEL, "choices": [],
                         "usage": {"prompt_tokens": 12, "completion_tokens": words,
                                   "total_tokens": 12 + words}})
    return b"data: " + body + b"\n\n"


async def read_body(reader: asyncio.StreamReader, headers: dict[bytes, bytes]) -> bytes:
    length = headers.get(b"content-length")
    if length is not None:
        return await reader.readexactly(int(length))
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
    return b""


async def answer(writer: asyncio.StreamWriter, behaviour: Behaviour, body: bytes,
                 words: int) -> None:
    try:
        request = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        request = {}
    if behaviour.first_byte:
        await asyncio.sleep(behaviour.first_byte)
    if not request.get("stream"):
        writer.write(behaviour.json_head + behaviour.json_body)
        return
    writer.write(SSE_HEAD)
    events = list(behaviour.sse_events)
    if (request.get("stream_options") or {}).get("include_usage"):
        events.append(usage_event(words))
    events.append(b"data: [DONE]\n\n")
    for index, event in enumerate(events):
        if index and behaviour.chunk_delay:
            await asyncio.sleep(behaviour.chunk_delay)
        writer.write(http_chunk(event))
        if behaviour.chunk_delay:
            await writer.drain()
    writer.write(b"0\r\n\r\n")


async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     behaviour: Behaviour, words: int) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            method, path = lines[0].split(b" ")[:2]
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            body = await read_body(reader, headers)
            if method == b"POST" and path.split(b"?")[0].endswith(b"/chat/completions"):
                await answer(writer, behaviour, body, words)
            else:
                writer.write(NOT_FOUND)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def serve(port: int, behaviour: Behaviour, words: int) -> None:
    server = await asyncio.start_server(
        lambda r, w: connection(r, w, behaviour, words), "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"upstream ready on {port}", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="Fast fake OpenAI-compatible upstream.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--first-byte-ms", type=float, default=0.0)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    parser.add_argument("--words", type=int, default=40)
    args = parser.parse_args()
    behaviour = Behaviour(args.first_byte_ms, args.chunks, args.chunk_delay_ms, args.words)
    run_fast(serve(args.port, behaviour, args.words))


def run_fast(coro: Coroutine[Any, Any, None]) -> None:
    """uvloop when it is installed (as in the sidecar), else the stdlib loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
        return
    uvloop.run(coro)


if __name__ == "__main__":
    main()
