"""A separate OS process hammering a shared RedisStore, for the cross-replica tests.

Run as `python -m tests.sidecar.store_worker '<json job>'` by test_store_concurrency.py: it
connects, prints "ready", waits for a line on stdin (so two workers start together), fires
`count` concurrent admits (settling each admitted ticket at once when `settle_fraction` is
set) and prints one JSON line with what it saw.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections import Counter
from typing import Any

from llmgate_sidecar.policy.redis_store import RedisStore
from llmgate_sidecar.policy.store import Demand, Ticket


async def run(job: dict[str, Any]) -> dict[str, Any]:
    store = RedisStore.from_url(job["url"], timeout=10.0)
    demand = Demand(**job["demand"])
    fraction: float | None = job.get("settle_fraction")
    await store.client.ping()
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)

    async def one() -> str:
        outcome = await store.admit(demand)
        if not isinstance(outcome, Ticket):
            return outcome.kind
        if fraction is not None:
            cost = int(demand.reserve_micros * random.uniform(fraction, 1.0))
            await store.settle(outcome, tokens=0, cost_micros=cost)
        return "admitted"

    try:
        results = Counter(await asyncio.gather(*(one() for _ in range(job["count"]))))
        return {"outcomes": dict(results), "health": store.health.__dict__}
    finally:
        await store.aclose()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(json.loads(sys.argv[1])))), flush=True)
