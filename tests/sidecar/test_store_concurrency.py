"""Atomicity under concurrency: 200 admits racing for a budget worth N reservations admit
exactly N, in one process (both stores) and from two OS processes sharing one Redis, and
rate limits hold globally across those processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmgate_sidecar.policy.redis_store import RedisStore
from llmgate_sidecar.policy.store import Demand, Store, Ticket

from tests.sidecar.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
BUDGET = 10_000_000                     # $10.00
RESERVE = 370_000                       # $0.37: the budget holds exactly 27 reservations
N = BUDGET // RESERVE


async def test_200_concurrent_admits_get_exactly_the_reservations_that_fit(
        store: Store) -> None:
    demand = Demand("ns/race", budget_micros=BUDGET, period="1d", reserve_micros=RESERVE)
    outcomes = await asyncio.gather(*(store.admit(demand) for _ in range(200)))
    assert sum(isinstance(o, Ticket) for o in outcomes) == N == 27
    spend = await store.spend("ns/race", "1d")
    assert spend.reserved_micros == N * RESERVE <= BUDGET


def run_workers(url: str, demand: Demand, *, count: int = 100, processes: int = 2,
                settle_fraction: float | None = None) -> list[dict[str, Any]]:
    """Start the workers, release them together, and collect their reports."""
    job = json.dumps({"url": url, "demand": asdict(demand), "count": count,
                      "settle_fraction": settle_fraction})
    procs = [subprocess.Popen([sys.executable, "-m", "tests.sidecar.store_worker", job],
                              cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True) for _ in range(processes)]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in procs:                       # both are connected: start them together
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        reports = [json.loads(proc.communicate(timeout=60)[0]) for proc in procs]
        assert [proc.returncode for proc in procs] == [0] * processes
        return reports
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def total(reports: list[dict[str, Any]]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for report in reports:
        counts.update(report["outcomes"])
        assert report["health"]["degraded"] is False and report["health"]["fallbacks"] == 0
    return counts


async def test_two_processes_share_one_budget(redis_server: RedisServer) -> None:
    # $100 holds 270 reservations; each process alone would take all of its 200 admits, so
    # exactly 270 in total means every admit of one saw every reservation of the other.
    demand = Demand("ns/replicas", budget_micros=100_000_000, period="1d",
                    reserve_micros=RESERVE)
    reports = await asyncio.to_thread(run_workers, redis_server.url, demand, count=200)
    assert total(reports) == {"admitted": 270, "budget": 130}
    store = RedisStore.from_url(redis_server.url)
    try:
        spend = await store.spend("ns/replicas", "1d")
    finally:
        await store.aclose()
    assert spend.reserved_micros == 270 * RESERVE <= 100_000_000


async def test_two_processes_settling_never_overshoot_the_budget(
        redis_server: RedisServer) -> None:
    demand = Demand("ns/settling", budget_micros=BUDGET, period="1d", reserve_micros=RESERVE)
    reports = await asyncio.to_thread(run_workers, redis_server.url, demand,
                                      settle_fraction=0.2)
    counts = total(reports)
    assert counts["admitted"] >= N                  # released reservations were reused
    store = RedisStore.from_url(redis_server.url)
    try:
        spend = await store.spend("ns/settling", "1d")
    finally:
        await store.aclose()
    assert spend.reserved_micros == 0
    # Real cost never exceeded its reservation here, so the bound is the budget itself.
    assert 0 < spend.spent_micros <= BUDGET


async def test_requests_per_minute_hold_across_processes(redis_server: RedisServer) -> None:
    demand = Demand("ns/rpm", requests_per_minute=50, tokens_per_minute=10_000, tokens=100)
    counts = total(await asyncio.to_thread(run_workers, redis_server.url, demand))
    assert counts == {"admitted": 50, "requests": 150}
