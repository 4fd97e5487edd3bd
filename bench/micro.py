"""Per-call timings of the sidecar's per-request steps: `.venv/bin/python bench/micro.py`.

The end-to-end harness cannot resolve a change worth 1-3% of a request on this shared
machine, so each hot-path step is also timed alone, in process, on the benchmark's own
config: the reservation, a request's metric updates, admit + settle through the
`Accountant` with the in-memory store, and the SSE parser on a 20-chunk stream. And whole
requests: the sidecar app served in this process on loopback, in front of the benchmark's
fake upstream (its own process, on the harness core), driven by a minimal client in the same
event loop; the CPU time this process spends per request (`time.process_time`: the sidecar
plus the small, unchanging cost of the client) for JSON at concurrency 1 and 16 and for
streams at 16. `--requests-only` times only those. Run it with `PYTHONPATH` pointing at
another checkout's source roots to time that checkout instead. Prints microseconds per call
(best of several repeats: the least disturbed).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import yaml
from llmgate_contract import Bundle
from llmgate_operator.compile import compile_namespace
from llmgate_sidecar.config.runtime import Runtime
from llmgate_sidecar.observability.metrics import Metrics
from llmgate_sidecar.policy.accounting import Accountant, reservation
from llmgate_sidecar.policy.limits import Limiter
from llmgate_sidecar.policy.store import MemoryStore
from llmgate_sidecar.upstream.providers.base import Usage
from llmgate_sidecar.upstream.transport import Transports
from llmgate_sidecar.wire.sse import SSEParser
from loadgen import build_request
from measure import body
from peers import compile_llmgate
from procs import BENCH_KEY, HARNESS_CPU, Child, free_port, llmgate_config, wait_port

BENCH = Path(__file__).resolve().parent

REPEATS = 7


def best_us(fn: Callable[[], Any], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=REPEATS)) / number * 1e6


def runtime(transports: Transports) -> Runtime:
    docs = [d for d in yaml.safe_load_all(llmgate_config(1)) if d]
    secrets = {d["metadata"]["name"]: d["stringData"] for d in docs if d["kind"] == "Secret"}
    resources = [d for d in docs if d["kind"] != "Secret"]
    result = compile_namespace("default", resources, secrets, now=datetime.now(UTC))
    return Runtime.build(Bundle(result.config, result.credentials), transports)


def metric_updates(metrics: Metrics) -> None:
    """The label lookups and updates one JSON request makes (lifecycle, routing, accounting)."""
    metrics.attempts.labels("fake-openai", "bench-model", "success").inc()
    metrics.overhead.labels("false").observe(0.0002)
    metrics.tokens.labels("bench-model", "fake-openai", "bench-model", "bench", "input").inc(20)
    metrics.tokens.labels("bench-model", "fake-openai", "bench-model", "bench",
                          "output").inc(40)
    metrics.cost.labels("bench-model", "fake-openai", "bench-model", "bench").inc(1e-5)
    metrics.store_duration.labels("admit", "memory").observe(1e-5)
    metrics.store_duration.labels("settle", "memory").observe(1e-5)
    metrics.duration.labels("bench-model", "false").observe(0.001)
    metrics.requests.labels("bench-model", "fake-openai", "bench-model", "bench", "2xx").inc()


async def admit_settle(rt: Runtime, n: int) -> float:
    """Admit and settle `n` requests of the bench key, settlement included (tasks drained)."""
    accountant = Accountant(Limiter(MemoryStore()))
    metrics = Metrics()
    policy = rt.keys_by_name["bench"]
    route = rt.routes_by_model["bench-model"]
    target = next(iter(route.group.targets))
    planned = reservation(rt, route, route.group, orjson.loads(body(False)))
    usage = Usage(20, 40, 0, True)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(n):
        ticket = await accountant.admit(rt, policy, planned, metrics)
        accountant.settle_later(ticket, planned, rt, target, usage,  # type: ignore[arg-type]
                                metrics=metrics, route=route.name, policy=policy)
        await asyncio.sleep(0)  # lets a settlement task run, as the next request would
    elapsed = loop.time() - started
    # Not timed: drain waits out the throttled remaining-budget read (REMAINING_INTERVAL).
    await accountant.drain()
    return elapsed / n * 1e6


async def timings() -> dict[str, float]:
    transports = Transports()  # its HTTP pools need a running loop
    rt = runtime(transports)
    route = rt.routes_by_model["bench-model"]
    request = orjson.loads(body(False))
    metrics = Metrics()
    stream = b"".join(b'data: {"id":"x","choices":[{"index":0,"delta":{"content":"lorem "}}]}\n\n'
                      for _ in range(20)) + b"data: [DONE]\n\n"
    chunks = [stream[i:i + 90] for i in range(0, len(stream), 90)]

    def parse() -> None:
        parser = SSEParser()
        for chunk in chunks:
            parser.feed(chunk)
        parser.close()

    results = {
        "reservation_us": best_us(lambda: reservation(rt, route, route.group, request), 5000),
        "metric_updates_us": best_us(lambda: metric_updates(metrics), 5000),
        "sse_parse_20_chunks_us": best_us(parse, 2000),
        "admit_settle_us": min([await admit_settle(rt, 5000) for _ in range(REPEATS)]),
    }
    await transports.close()
    return results


class Exchange(asyncio.Protocol):
    """A keep-alive client connection that sends one request and waits for its whole answer
    (a Content-Length body, or a chunked one up to its last chunk); minimal on purpose, so
    its own CPU is small and the same for every checkout timed."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.done: asyncio.Future[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.done is None:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"content-length: ")
        if at >= 0:
            complete = len(self.buffer) >= end + 4 + int(head[at + 16:].split(b"\r\n")[0])
        else:
            complete = self.buffer.endswith(b"\r\n0\r\n\r\n")
        if complete:
            answer, self.buffer = bytes(self.buffer), bytearray()
            self.done.set_result(answer)

    async def send(self, request: bytes) -> bytes:
        assert self.transport is not None
        self.done = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        answer = await self.done
        if not answer.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"request failed: {answer[:300]!r}")
        return answer


async def _requests(port: int, stream: bool, concurrency: int, total: int) -> float:
    """CPU microseconds of this process per request, `total` requests at `concurrency`."""
    loop = asyncio.get_running_loop()
    _, _, request = build_request(f"http://127.0.0.1:{port}/v1/chat/completions",
                                  [f"Authorization: Bearer {BENCH_KEY}"], body(stream).encode())
    clients = [(await loop.create_connection(Exchange, "127.0.0.1", port))[1]
               for _ in range(concurrency)]

    async def worker(client: Exchange, n: int) -> None:
        for _ in range(n):
            await client.send(request)
    await asyncio.gather(*(worker(c, 20) for c in clients))  # warm-up
    started = time.process_time()
    await asyncio.gather(*(worker(c, total // concurrency) for c in clients))
    used = time.process_time() - started
    for client in clients:
        assert client.transport is not None
        client.transport.close()
    return used / (total // concurrency * concurrency) * 1e6


async def request_timings() -> dict[str, float]:
    """Whole requests through the sidecar app in this process (module docstring)."""
    from aiohttp import web
    from llmgate_sidecar.app import api_runner, create_app
    from llmgate_sidecar.settings import SidecarSettings, add_arguments, from_args

    with tempfile.TemporaryDirectory(prefix="llmgate-micro-") as tmp:
        work = Path(tmp)
        upstream_port, port = free_port(), free_port()
        upstream = Child("upstream", [sys.executable, str(BENCH / "upstream.py"),
                                      "--port", str(upstream_port)], cpu=HARNESS_CPU,
                         log_dir=work)
        try:
            wait_port(upstream_port, upstream, 15)
            root = compile_llmgate("micro", upstream_port, work)
            parser = argparse.ArgumentParser()
            add_arguments(parser, defaults=SidecarSettings())
            settings = from_args(parser.parse_args([
                "--config-dir", str(root / "config"), "--credentials-dir",
                str(root / "credentials"), "--port", str(port), "--log-level", "warning"]))
            runner = api_runner(create_app(settings), shutdown_timeout=1.0)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            try:
                return {
                    f"request_{name}_us": min([await _requests(port, stream, c, n)
                                               for _ in range(REPEATS)])
                    for name, stream, c, n in (("json_c1", False, 1, 1000),
                                               ("json_c16", False, 16, 3200),
                                               ("stream_c16", True, 16, 1600))}
            finally:
                await runner.cleanup()
        finally:
            upstream.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Per-call timings of hot-path steps.")
    parser.add_argument("--requests-only", action="store_true",
                        help="only the whole-request timings")
    args = parser.parse_args(argv)
    from llmgate_sidecar.server import install_fast_loop
    install_fast_loop()
    results = {} if args.requests_only else asyncio.run(timings())
    results |= asyncio.run(request_timings())
    print(orjson.dumps({k: round(v, 2) for k, v in results.items()}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
