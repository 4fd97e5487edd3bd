"""A/B of two llmgate checkouts, interleaved: `.venv/bin/python bench/ab.py A_DIR B_DIR`.

Starts one fake upstream and llmgate twice (from `A_DIR` and `B_DIR`, e.g. a `git archive`
of the previous state and the working tree, or `.` for the installed package), both pinned
to the gateway core, then alternates the same loads between them for `--rounds` rounds so
drift of the shared machine hits both alike. Prints, per load, the median (and min-max) of
CPU ms per request, p50/p99 and req/s for each side. Used to measure each optimisation
before keeping it; the full report is `run.py`'s job.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

from measure import Load
from measure import load as run_load
from peers import Target, start_llmgate
from procs import cpu_seconds, start_redis
from run import upstream

BENCH = Path(__file__).resolve().parent


def loads(requests: int) -> list[Load]:
    return [Load(False, 1, requests // 4, 6.0, 100), Load(False, 16, requests, 6.0, 200),
            Load(True, 1, requests // 8, 6.0, 50), Load(True, 16, requests // 2, 6.0, 100)]


def one(target: Target, shape: Load, work: Path) -> dict[str, Any]:
    assert target.child is not None
    before = cpu_seconds(target.child.pid)
    result = run_load(target, shape, work)
    used = cpu_seconds(target.child.pid) - before
    answered = result["ok"] + min(shape.warmup, shape.requests)
    if result["errors"]:
        raise RuntimeError(f"{target.name}: errors {result['error_samples']}")
    return {"cpu": used * 1000 / answered, "p50": result["p50"], "p99": result["p99"],
            "rps": result["rps"]}


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} [{min(values):.3f}-{max(values):.3f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--redis", action="store_true")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0,
                        help="pace the fake upstream's stream chunks")
    args = parser.parse_args(argv)
    args.first_byte_ms, args.chunks = 0.0, 20
    work = BENCH / "results" / "tmp" / "ab"
    work.mkdir(parents=True, exist_ok=True)
    shapes = loads(args.requests)
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with upstream(work, args) as direct:
        port = int(direct.url.split(":")[2].split("/")[0])
        redis, url = start_redis(work) if args.redis else (None, None)
        sides: list[Target] = []
        try:
            for name, source in (("A", args.a), ("B", args.b)):
                src = None if str(source) == "." else source
                sides.append(start_llmgate(name, port, work, redis_url=url, source=src))
            for rnd in range(args.rounds):
                for shape in shapes:
                    order = sides if rnd % 2 == 0 else sides[::-1]
                    for target in order:
                        key = (f"{shape.mode} c={shape.concurrency}", target.name)
                        samples.setdefault(key, []).append(one(target, shape, work))
                print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        finally:
            for target in sides:
                target.stop()
            if redis is not None:
                redis.stop()
    for shape in shapes:
        label = f"{shape.mode} c={shape.concurrency}"
        for side in ("A", "B"):
            rows = samples[(label, side)]
            print(f"{label:12} {side}: CPU ms/req {spread([r['cpu'] for r in rows])}  "
                  f"p50 {spread([r['p50'] for r in rows])}  p99 "
                  f"{spread([r['p99'] for r in rows])}  req/s "
                  f"{statistics.median(r['rps'] for r in rows):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
