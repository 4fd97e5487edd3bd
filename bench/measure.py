"""One measured load run, and the paired direct/gateway comparison built from such runs.

`load()` runs `loadgen.py` in its own process pinned to the harness core and reduces its raw
per-request timings to percentiles; `paired()` measures the direct path and then a target
with the same load, and samples the target's CPU time across its run. Called by `run.py`;
it starts no server itself.
"""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from peers import Target
from procs import HARNESS_CPU, cpu_seconds, pinned, rss_mb

BENCH = Path(__file__).resolve().parent
MODEL = "bench-model"


@dataclass(frozen=True)
class Load:
    """The shape of one run: what is sent, how many at once, and its bounds."""

    stream: bool
    concurrency: int
    requests: int
    duration: float
    warmup: int
    rate: float = 0.0
    """Open loop at this many requests per second (`concurrency` connections at most);
    0 = closed loop (`concurrency` workers back to back)."""

    @property
    def mode(self) -> str:
        return ("stream" if self.stream else "json") + ("-rate" if self.rate else "")


def body(stream: bool) -> str:
    request: dict[str, Any] = {"model": MODEL, "max_tokens": 64, "messages": [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Say lorem ipsum forty times."}]}
    if stream:
        request["stream"] = True
    return orjson.dumps(request).decode()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an unsorted list; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    lat, ttfb = raw.get("latency_ms", []), raw.get("ttfb_ms", [])
    return {"ok": raw.get("ok", 0), "errors": raw.get("errors", 0),
            "error_samples": raw.get("error_samples", []), "rps": raw.get("rps", 0.0),
            "elapsed_s": raw.get("elapsed_s", 0.0),
            "p50": percentile(lat, 50), "p90": percentile(lat, 90), "p99": percentile(lat, 99),
            "ttfb_p50": percentile(ttfb, 50), "ttfb_p99": percentile(ttfb, 99)}


def load(target: Target, shape: Load, work: Path) -> dict[str, Any]:
    out = work / f"load-{target.name}-{shape.mode}-{shape.concurrency}.json"
    argv = [sys.executable, str(BENCH / "loadgen.py"), "--url", target.url,
            "--body", body(shape.stream), "--concurrency", str(shape.concurrency),
            "--requests", str(shape.requests), "--duration", str(shape.duration),
            "--warmup", str(shape.warmup), "--out", str(out)]
    for header in target.headers:
        argv += ["--header", header]
    if shape.stream:
        argv.append("--stream")
    if shape.rate:
        argv += ["--rate", str(shape.rate)]
    limit = shape.duration * 2 + 60
    subprocess.run(pinned(argv, HARNESS_CPU), check=True, timeout=limit)
    return summarise(orjson.loads(out.read_bytes()))


def paired(direct: Target, target: Target, shape: Load, work: Path,
           repeat: int) -> dict[str, Any]:
    """Direct first, then the target under the same load; one row of results."""
    base = load(direct, shape, work)
    assert target.child is not None
    before = cpu_seconds(target.child.pid)
    result = load(target, shape, work)
    used = cpu_seconds(target.child.pid) - before
    # CPU time includes the warm-up requests too, so divide by everything answered.
    answered = result["ok"] + min(shape.warmup, shape.requests)
    cpu_ms = used * 1000 / answered if answered else math.nan
    return {"system": target.name, "mode": shape.mode, "concurrency": shape.concurrency,
            "rate": shape.rate, "repeat": repeat, **result, "cpu_ms_per_request": cpu_ms,
            # CPU % of one core at the measured rate (CPU per request x requests per
            # second: the load generator's start-up is not wall time of the gateway's),
            # and the resident set when the run ended.
            "cpu_pct": cpu_ms * result["rps"] / 10,
            "rss_mb": rss_mb(target.child.pid),
            "direct": base,
            "added_p50": result["p50"] - base["p50"], "added_p90": result["p90"] - base["p90"],
            "added_p99": result["p99"] - base["p99"],
            "added_ttfb_p50": result["ttfb_p50"] - base["ttfb_p50"]}
