"""Per-call timings of the sidecar's per-request steps: `.venv/bin/python bench/micro.py`.

The end-to-end harness cannot resolve a change worth 1-3% of a request on this shared
machine, so each hot-path step is also timed alone, in process, on the benchmark's own
config: the reservation, a request's metric updates, admit + settle through the
`Accountant` with the in-memory store, and the SSE parser on a 20-chunk stream. Run it with
`PYTHONPATH` pointing at another checkout's source roots to time that checkout instead.
Prints microseconds per call (best of several repeats: the least disturbed).
"""

from __future__ import annotations

import asyncio
import sys
import timeit
from collections.abc import Callable
from datetime import UTC, datetime
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
from measure import body
from procs import llmgate_config

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


def main() -> int:
    results = asyncio.run(timings())
    print(orjson.dumps({k: round(v, 2) for k, v in results.items()}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
