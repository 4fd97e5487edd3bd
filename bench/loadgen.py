"""The benchmark's load generator: keep-alive HTTP/1.1 clients on raw asyncio streams.

`run.py` starts it as its own process (pinned to another core than the gateway), so its CPU
never competes with what it measures. Each of `--concurrency` workers owns one connection and
sends requests back to back until `--requests` are done or `--duration` seconds pass, after an
unrecorded warm-up. With `--rate R` the load is open instead (fixed rate, like the peers
publish): request i is due at start + i/R whatever happened before it, on the first free one
of `--concurrency` connections, and its latency counts from when it was due, so a stalled
server shows as latency rather than as fewer requests sent (no coordinated omission).
It writes one JSON document: per-request latency and time to first body byte (ms), counts,
errors and the measured wall time. It talks to loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
from upstream import run_fast


class BadResponse(Exception):
    """The server answered, but not with a complete 200 of the expected shape."""


@dataclass
class Plan:
    host: str
    port: int
    request: bytes
    stream: bool
    concurrency: int
    requests: int
    duration: float
    warmup: int
    rate: float = 0.0  # requests per second, open loop; 0 = closed loop


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    ttfb: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    issued: int = 0

    def fail(self, why: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(why[:300])


def build_request(url: str, headers: list[str], body: bytes) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    lines = [f"POST {parts.path or '/'} HTTP/1.1", f"Host: {host}:{port}",
             "Content-Type: application/json", f"Content-Length: {len(body)}",
             "Connection: keep-alive", *headers]
    return host, port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader, started: float,
                        stream: bool) -> tuple[float, bool]:
    """Read one whole response; return (time to first body byte, server keeps the socket)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, _, rest = head.partition(b"\r\n")
    headers: dict[bytes, bytes] = {}
    for line in rest.split(b"\r\n"):
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    keep = headers.get(b"connection", b"").lower() != b"close"
    status_ok = status_line.split(b" ")[1] == b"200"
    if b"content-length" in headers:
        body = await reader.readexactly(int(headers[b"content-length"]))
        first = time.perf_counter() - started
    elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        first, body = await read_chunked(reader, started)
    else:
        body = await reader.read()
        first, keep = time.perf_counter() - started, False
    if not status_ok:
        raise BadResponse(f"{status_line.decode(errors='replace')}: "
                          f"{body[:200].decode(errors='replace')}")
    if stream and b"data: [DONE]" not in body:
        raise BadResponse(f"stream did not end with [DONE]: {body[-200:]!r}")
    if not stream and b'"choices"' not in body:
        raise BadResponse(f"no choices in the JSON answer: {body[:200]!r}")
    return first, keep


async def read_chunked(reader: asyncio.StreamReader, started: float) -> tuple[float, bytes]:
    parts: list[bytes] = []
    first = 0.0
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return first, b"".join(parts)
        parts.append(await reader.readexactly(size))
        if not first:
            first = time.perf_counter() - started
        await reader.readexactly(2)


async def worker(plan: Plan, tally: Tally, budget: list[int], deadline: float,
                 record: bool) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        while budget[0] > 0 and time.perf_counter() < deadline:
            budget[0] -= 1
            if writer is None or reader is None:
                reader, writer = await asyncio.open_connection(plan.host, plan.port)
            started = time.perf_counter()
            try:
                writer.write(plan.request)
                first, keep = await read_response(reader, started, plan.stream)
            except (BadResponse, OSError, asyncio.IncompleteReadError, ValueError,
                    IndexError, asyncio.LimitOverrunError) as exc:
                if record:
                    tally.fail(f"{type(exc).__name__}: {exc}")
                writer.close()
                reader = writer = None
                await asyncio.sleep(0.01)
                continue
            if record:
                tally.latencies.append((time.perf_counter() - started) * 1000)
                tally.ttfb.append(first * 1000)
            if not keep:
                writer.close()
                reader = writer = None
    finally:
        if writer is not None:
            writer.close()


async def exchange(plan: Plan, conn: list[Any], due: float, tally: Tally, record: bool) -> None:
    """One request on the connection `conn` ([reader, writer], reopened when closed)."""
    try:
        if conn[1] is None:
            conn[0], conn[1] = await asyncio.open_connection(plan.host, plan.port)
        conn[1].write(plan.request)
        first, keep = await read_response(conn[0], due, plan.stream)
    except (BadResponse, OSError, asyncio.IncompleteReadError, ValueError, IndexError,
            asyncio.LimitOverrunError) as exc:
        if record:
            tally.fail(f"{type(exc).__name__}: {exc}")
        keep = False
    else:
        if record:
            tally.latencies.append((time.perf_counter() - due) * 1000)
            tally.ttfb.append(first * 1000)
    if not keep and conn[1] is not None:
        conn[1].close()
        conn[0] = conn[1] = None


async def paced(plan: Plan, count: int, tally: Tally, record: bool) -> float:
    """`count` requests at `plan.rate` per second on at most `plan.concurrency` connections;
    returns the wall time from the first due time to the last answer."""
    idle: asyncio.Queue[list[Any]] = asyncio.Queue()
    for _ in range(plan.concurrency):
        idle.put_nowait([None, None])
    pending: set[asyncio.Task[None]] = set()

    async def one(due: float) -> None:
        conn = await idle.get()
        try:
            await exchange(plan, conn, due, tally, record)
        finally:
            idle.put_nowait(conn)

    start = time.perf_counter()
    deadline = start + plan.duration
    for i in range(count):
        due = start + i / plan.rate
        if due > deadline:
            break
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.ensure_future(one(due))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending, timeout=max(5.0, plan.duration))
    for task in pending:
        task.cancel()
    while not idle.empty():
        conn = idle.get_nowait()
        if conn[1] is not None:
            conn[1].close()
    return time.perf_counter() - start


async def drive(plan: Plan) -> dict[str, Any]:
    tally = Tally()
    if plan.rate > 0:
        if plan.warmup:
            await paced(plan, plan.warmup, Tally(), False)
        elapsed = await paced(plan, plan.requests, tally, True)
        return {"ok": len(tally.latencies), "errors": tally.errors,
                "error_samples": tally.error_samples, "elapsed_s": elapsed,
                "rps": len(tally.latencies) / elapsed if elapsed > 0 else 0.0,
                "latency_ms": tally.latencies, "ttfb_ms": tally.ttfb}
    if plan.warmup:
        budget = [plan.warmup]
        deadline = time.perf_counter() + max(5.0, plan.duration)
        await asyncio.gather(*(worker(plan, Tally(), budget, deadline, False)
                               for _ in range(plan.concurrency)))
    budget = [plan.requests]
    started = time.perf_counter()
    await asyncio.gather(*(worker(plan, tally, budget, started + plan.duration, True)
                           for _ in range(plan.concurrency)))
    elapsed = time.perf_counter() - started
    return {"ok": len(tally.latencies), "errors": tally.errors,
            "error_samples": tally.error_samples, "elapsed_s": elapsed,
            "rps": len(tally.latencies) / elapsed if elapsed > 0 else 0.0,
            "latency_ms": tally.latencies, "ttfb_ms": tally.ttfb}


def parse_args(argv: list[str]) -> tuple[Plan, str]:
    parser = argparse.ArgumentParser(description="Keep-alive HTTP load generator.")
    parser.add_argument("--url", required=True)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--body", required=True, help="the JSON request body")
    parser.add_argument("--stream", action="store_true", help="expect SSE answers")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--rate", type=float, default=0.0,
                        help="open loop: this many requests per second (0: closed loop)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    host, port, request = build_request(args.url, args.header, args.body.encode())
    return Plan(host, port, request, args.stream, args.concurrency, args.requests,
                args.duration, args.warmup, args.rate), args.out


def main(argv: list[str] | None = None) -> None:
    plan, out = parse_args(sys.argv[1:] if argv is None else argv)
    result: dict[str, Any] = {}

    async def go() -> None:
        result.update(await drive(plan))

    run_fast(go())
    with open(out, "wb") as handle:
        handle.write(orjson.dumps(result))


if __name__ == "__main__":
    main()
