"""What the upstream HTTP client costs per request: `.venv/bin/python bench/clients.py`.

The evidence for (or against) replacing aiohttp's client on the request path (issue 16):
the same JSON chat request is sent to the benchmark's fake upstream (its own process, on the
harness core) by each client below, in this process, one keep-alive connection per worker;
the figure is the CPU time of this process per request (`time.process_time`: the client's
work, the event loop's share and the syscalls), best of several batches, at concurrency 1
and 16. The clients, in the order printed:

- `llmgate`: llmgate's own `HttpTransport.send` + `read()` (aiohttp with llmgate's session
  options, the bounded read, the error mapping): what the sidecar pays today;
- `aiohttp`: a bare `ClientSession.request` + `read()` with aiohttp's defaults;
- `aiohttp-tuned`: the same with everything aiohttp lets a caller skip (no cookie jar, a
  parsed `URL`, no auto headers, a session-wide timeout, pre-built `CIMultiDict` headers);
- `httpx`: httpx's `AsyncClient` (the other maintained asyncio client installed here);
- `floor`: a minimal keep-alive HTTP/1.1 exchange on an asyncio `Protocol` (one write, the
  status line and `Content-Length` found with `bytes.find`): no gzip, no chunked bodies, no
  limits, no TLS. Not a client anyone should ship: the least any client on this event loop
  can cost, so `llmgate - floor` is the most a leaner client could save.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx
import orjson
from llmgate_sidecar.server import install_fast_loop
from llmgate_sidecar.upstream.providers.base import UpstreamRequest
from llmgate_sidecar.upstream.transport import HttpTransport
from measure import body
from micro import Exchange  # the floor: the cheapest keep-alive exchange
from multidict import CIMultiDict
from procs import HARNESS_CPU, UPSTREAM_KEY, Child, free_port, wait_port
from yarl import URL

BENCH = Path(__file__).resolve().parent
REPEATS = 7
Send = Callable[[], Awaitable[bytes]]


async def _senders(url: str, concurrency: int) -> tuple[dict[str, list[Send]],
                                                        Callable[[], Awaitable[None]]]:
    """Per client name, one `send` per worker; and a function closing them all."""
    payload = body(False).encode()
    headers = {"content-type": "application/json", "authorization": f"Bearer {UPSTREAM_KEY}"}
    transport = HttpTransport()
    request = UpstreamRequest("POST", url, headers, payload)

    async def llmgate() -> bytes:
        response = await transport.send(request, timeout=30.0, provider="p", model="m")
        return await response.read()

    plain = aiohttp.ClientSession()

    async def bare() -> bytes:
        async with plain.request("POST", url, data=payload, headers=headers) as response:
            return await response.read()

    tuned_session = aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(), timeout=aiohttp.ClientTimeout(total=None),
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"))
    parsed, built = URL(url), CIMultiDict(headers)

    async def tuned() -> bytes:
        async with tuned_session.request("POST", parsed, data=payload, headers=built,
                                         allow_redirects=False) as response:
            return await response.read()

    hx = httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=concurrency))

    async def httpx_send() -> bytes:
        response = await hx.post(url, content=payload, headers=headers)
        return response.content

    loop = asyncio.get_running_loop()
    target = URL(url)
    host, port = target.raw_host or "127.0.0.1", target.port or 80
    raw = (f"POST {target.raw_path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
           f"Content-Type: application/json\r\nAuthorization: Bearer {UPSTREAM_KEY}\r\n"
           f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload
    floors = [(await loop.create_connection(Exchange, host, port))[1]
              for _ in range(concurrency)]

    def floor_send(client: Exchange) -> Send:
        return lambda: client.send(raw)

    async def close() -> None:
        await transport.close()
        await plain.close()
        await tuned_session.close()
        await hx.aclose()
        for client in floors:
            assert client.transport is not None
            client.transport.close()

    each: dict[str, Send] = {"llmgate": llmgate, "aiohttp": bare, "aiohttp-tuned": tuned,
                             "httpx": httpx_send}
    senders: dict[str, list[Send]] = {name: [send] * concurrency
                                      for name, send in each.items()}
    senders["floor"] = [floor_send(client) for client in floors]
    return senders, close


async def _batch(sends: list[Send], per_worker: int) -> float:
    async def worker(send: Send) -> None:
        for _ in range(per_worker):
            answer = await send()
            if b'"choices"' not in answer:
                raise RuntimeError(f"bad answer: {answer[:200]!r}")
    started = time.process_time()
    await asyncio.gather(*(worker(send) for send in sends))
    return (time.process_time() - started) / (per_worker * len(sends)) * 1e6


async def measure(url: str, concurrency: int, total: int) -> dict[str, list[float]]:
    senders, close = await _senders(url, concurrency)
    try:
        for sends in senders.values():
            await _batch(sends, 20)  # warm-up: connections open, caches warm
        results: dict[str, list[float]] = {name: [] for name in senders}
        for _ in range(REPEATS):  # alternated, so drift of the machine hits all alike
            for name, sends in senders.items():
                results[name].append(await _batch(sends, total // concurrency))
        return results
    finally:
        await close()


async def run(total: int) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="llmgate-clients-") as tmp:
        port = free_port()
        upstream = Child("upstream", [sys.executable, str(BENCH / "upstream.py"),
                                      "--port", str(port)], cpu=HARNESS_CPU, log_dir=Path(tmp))
        try:
            wait_port(port, upstream, 15)
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            out: dict[str, dict[str, float]] = {}
            for concurrency in (1, 16):
                for name, values in (await measure(url, concurrency, total)).items():
                    out.setdefault(name, {})[f"c{concurrency}_best_us"] = round(min(values), 1)
                    out[name][f"c{concurrency}_median_us"] = round(
                        statistics.median(values), 1)
            return out
        finally:
            upstream.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1600, help="per batch")
    args = parser.parse_args(argv)
    install_fast_loop()
    results = asyncio.run(run(args.requests))
    for name, figures in results.items():
        print(f"{name:14} " + "  ".join(f"{k} {v:7.1f}" for k, v in figures.items()))
    print(orjson.dumps(results).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
