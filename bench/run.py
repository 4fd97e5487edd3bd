"""The benchmark in one command: `.venv/bin/python bench/run.py [--quick] [--peers]`.

Starts the fast fake upstream, then each system in turn (`llmgate sidecar` with the
in-memory store, with Redis, and with `--peers` LiteLLM and Portkey), pinned to core 0 while
the upstream and load generator share core 1. Every measured run is paired with a direct run
under the same load: closed-loop loads (concurrency 1, 16, 64) and fixed-rate loads (500 and
1,000 req/s offered). Cold starts of the sidecar (exec to /readyz 200, RSS then) are timed
on their own. The full run writes `bench/results/latest.{json,md,png}` (and a profile);
`--quick` measures llmgate only, briefly, prints a JSON verdict and exits non-zero when a
request fails or a figure is missing (it judges correctness, never speed: ratios and
latencies are the report's to show). Every child is stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from measure import Load, paired
from peers import Target, start_litellm, start_llmgate, start_portkey
from procs import HARNESS_CPU, Child, free_port, peak_rss_mb, start_redis, wait_port
from profiling import profile_under_load
from starts import cold_start, describe

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
RATES = (500.0, 1000.0)  # fixed-rate loads, requests per second offered
RATE_SECONDS = 4.0
RATE_CONNECTIONS = 64  # connections the fixed-rate client may have in flight
PEERS = ("litellm", "portkey")
STARTS = 5  # cold starts timed in a full run (2 in quick mode)


def full_loads(scale: float) -> list[Load]:
    counts = {1: 2000, 16: 8000, 64: 12000}
    closed = [Load(stream, c, int(n * scale), 6.0, 300)
              for stream in (False, True) for c, n in counts.items()]
    return closed + [Load(False, RATE_CONNECTIONS, int(rate * RATE_SECONDS), RATE_SECONDS,
                          int(rate / 2), rate=rate) for rate in RATES]


def quick_loads() -> list[Load]:
    return [Load(False, 1, 300, 20.0, 50), Load(False, 16, 2000, 20.0, 100),
            Load(True, 16, 500, 20.0, 50), Load(False, 16, 300, 20.0, 50, rate=200.0)]


@contextlib.contextmanager
def upstream(work: Path, args: argparse.Namespace) -> Iterator[Target]:
    port = free_port()
    child = Child("upstream", [sys.executable, str(BENCH / "upstream.py"), "--port", str(port),
                               "--first-byte-ms", str(args.first_byte_ms),
                               "--chunks", str(args.chunks),
                               "--chunk-delay-ms", str(args.chunk_delay_ms)],
                  cpu=HARNESS_CPU, log_dir=work)
    try:
        wait_port(port, child, 15)
        direct = Target("direct", f"http://127.0.0.1:{port}/v1/chat/completions",
                        ["Authorization: Bearer sk-upstream-bench"], child)
        yield direct
    finally:
        child.stop()


def measure_system(target: Target, direct: Target, loads: list[Load], repeats: int,
                   work: Path) -> list[dict[str, Any]]:
    rows = []
    for repeat in range(repeats):
        for shape in loads:
            row = paired(direct, target, shape, work, repeat)
            rows.append(row)
            at = f"@{shape.rate:.0f}/s" if shape.rate else f"c={shape.concurrency}"
            print(f"  {target.name:14} {shape.mode:10} {at:8} r{repeat}: "
                  f"p50 {row['p50']:.3f} ms (+{row['added_p50']:.3f}), p99 {row['p99']:.3f} ms "
                  f"(+{row['added_p99']:.3f}), {row['rps']:.0f} req/s, "
                  f"{row['cpu_ms_per_request']:.3f} ms CPU/req, {row['cpu_pct']:.0f}% CPU, "
                  f"RSS {row['rss_mb']:.1f} MiB, errors {row['errors']}",
                  flush=True)
    return rows


def run_systems(args: argparse.Namespace, work: Path, loads: list[Load],
                repeats: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    systems: dict[str, Any] = {}
    names = ["llmgate"] if args.quick else ["llmgate", "llmgate-redis"]
    if args.peers is not None:
        names += args.peers or list(PEERS)
    with upstream(work, args) as direct:
        port = int(direct.url.split(":")[2].split("/")[0])
        for name in names:
            print(f"{name}: starting", flush=True)
            redis: Child | None = None
            target: Target | None = None
            try:
                if name == "llmgate-redis":
                    redis, url = start_redis(work)
                    target = start_llmgate(name, port, work, redis_url=url,
                                           source=args.source)
                elif name == "llmgate":
                    target = start_llmgate(name, port, work, source=args.source)
                elif name == "litellm":
                    target = start_litellm(port, work)
                else:
                    target = start_portkey(port, work)
                rows += measure_system(target, direct, loads, repeats, work)
                assert target.child is not None
                systems[name] = {"peak_rss_mb": peak_rss_mb(target.child.pid),
                                 "version": target.version, "pid": target.child.pid,
                                 "start_s": target.start_s,
                                 "start_rss_mb": target.start_rss_mb}
                if name == "llmgate" and args.profile:
                    systems[name]["profile"] = profile_under_load(target, work)
            except (RuntimeError, OSError) as exc:
                print(f"{name}: could not be measured: {exc}", flush=True)
                systems[name] = {"error": str(exc)[-2000:]}
            finally:
                if target is not None:
                    target.stop()
                if redis is not None:
                    redis.stop()
    return rows, systems


def cold_starts(args: argparse.Namespace, work: Path, count: int) -> list[dict[str, float]]:
    """Start `llmgate sidecar` (in-memory store) `count` times with nothing else running
    on its core (`starts.cold_start`)."""
    starts = []
    for _ in range(count):
        starts.append(cold_start(work, args.source))
        print(f"  cold start: {describe(starts[-1])}", flush=True)
    return starts


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release(), "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                time.gmtime())}


def quick_verdict(rows: list[dict[str, Any]], loads: list[Load],
                  starts: list[dict[str, float]]) -> dict[str, Any]:
    """Correctness only: every request answered, every figure present, the comparison with
    the direct path computed. No latency or throughput threshold (timings on a shared
    machine are the report's to show, not a test's to assert)."""
    problems = []
    for row, shape in zip(rows, loads, strict=True):
        where = f"{row['mode']} c={row['concurrency']}"
        if row["errors"] or row["ok"] < shape.requests or row["direct"]["ok"] < shape.requests:
            problems.append(f"{where}: {row['ok']}/{shape.requests} answered "
                            f"(direct {row['direct']['ok']}), errors {row['error_samples']}")
        figures = {k: row[k] for k in ("p50", "p99", "rps", "cpu_ms_per_request", "cpu_pct",
                                       "rss_mb", "added_p50", "added_p99")}
        figures |= {f"direct {k}": row["direct"][k] for k in ("p50", "p99", "rps")}
        missing = [k for k, v in figures.items() if not math.isfinite(v)]
        if missing:
            problems.append(f"{where}: no figure for {missing}")
        elif row["added_p50"] != row["p50"] - row["direct"]["p50"]:
            problems.append(f"{where}: added p50 is not gateway - direct")
    if not starts or not all(math.isfinite(s["start_s"]) and s["rss_mb"] > 0 for s in starts):
        problems.append(f"cold starts not measured: {starts}")
    return {"ok": not problems, "problems": problems}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark llmgate against the direct path "
                                     "and (with --peers) LiteLLM and Portkey.")
    parser.add_argument("--quick", action="store_true", help="< 1 minute regression check")
    parser.add_argument("--peers", nargs="*", choices=PEERS, default=None,
                        help="also install and run the peers (all, or those named)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply request counts")
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--first-byte-ms", type=float, default=0.0)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--source", type=Path, default=None,
                        help="run llmgate from this checkout (e.g. a git archive of a commit) "
                             "instead of the installed package")
    args = parser.parse_args(argv)
    if args.quick:
        args.profile, args.peers = False, None
    out = args.out_dir or (RESULTS / "tmp" / "quick" if args.quick else RESULTS)
    # Quick runs with --out-dir keep their logs beside the verdict (tests read them).
    work = (args.out_dir / "work") if args.out_dir and args.quick else \
        RESULTS / "tmp" / ("quick" if args.quick else "full")
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    loads = quick_loads() if args.quick else full_loads(args.scale)
    started = time.monotonic()
    print("llmgate: cold starts", flush=True)
    starts = cold_starts(args, work, 2 if args.quick else STARTS)
    rows, systems = run_systems(args, work, loads, 1 if args.quick else args.repeats)
    result = {"machine": machine(), "rows": rows, "systems": systems, "starts": starts,
              "settings": {"repeats": 1 if args.quick else args.repeats,
                           "first_byte_ms": args.first_byte_ms, "chunks": args.chunks,
                           "chunk_delay_ms": args.chunk_delay_ms,
                           "loads": [vars(s) for s in loads]},
              "seconds": round(time.monotonic() - started, 1)}
    if args.quick:
        llmgate_rows = [r for r in rows if r["system"] == "llmgate"]
        verdict = quick_verdict(llmgate_rows, loads, starts) \
            if len(llmgate_rows) == len(loads) \
            else {"ok": False, "problems": [str(systems.get("llmgate"))]}
        result["verdict"] = verdict
        (out / "quick.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
        print(orjson.dumps(verdict).decode())
        return 0 if verdict["ok"] else 1
    (out / "latest.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    from report import write_report  # matplotlib is needed by the full run only
    write_report(result, out)
    print(f"wrote {out / 'latest.md'}, {out / 'latest.png'}, {out / 'latest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
