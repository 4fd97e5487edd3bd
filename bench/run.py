"""The benchmark in one command: `.venv/bin/python bench/run.py [--quick] [--peers]`.

Starts the fast fake upstream, then each system in turn (llmgate with the in-memory store,
llmgate with Redis, and with `--peers` LiteLLM and Portkey), pinned to core 0 while the
upstream and load generator share core 1. Every measured run is paired with a direct run
under the same load. The full run writes `bench/results/latest.{json,md,png}` (and a profile);
`--quick` measures llmgate only, briefly, prints a JSON verdict and exits non-zero when the
gateway fails requests or is grossly slower than the direct path. Every child is stopped.
"""

from __future__ import annotations

import argparse
import contextlib
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

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
QUICK_SLACK_MS = 50.0  # quick mode: gateway p50 may exceed direct p50 by this much
QUICK_RPS_FACTOR = 100.0  # quick mode: direct may be at most this many times faster


def full_loads(scale: float) -> list[Load]:
    counts = {1: 2000, 16: 8000, 64: 12000}
    return [Load(stream, c, int(n * scale), 6.0, 300)
            for stream in (False, True) for c, n in counts.items()]


def quick_loads() -> list[Load]:
    return [Load(False, 1, 300, 20.0, 50), Load(False, 16, 2000, 20.0, 100),
            Load(True, 16, 500, 20.0, 50)]


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
            print(f"  {target.name:14} {shape.mode:6} c={shape.concurrency:<3} r{repeat}: "
                  f"p50 {row['p50']:.3f} ms (+{row['added_p50']:.3f}), p99 {row['p99']:.3f} ms "
                  f"(+{row['added_p99']:.3f}), {row['rps']:.0f} req/s, "
                  f"{row['cpu_ms_per_request']:.3f} ms CPU/req, errors {row['errors']}",
                  flush=True)
    return rows


def run_systems(args: argparse.Namespace, work: Path, loads: list[Load],
                repeats: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    systems: dict[str, Any] = {}
    names = ["llmgate"] if args.quick else ["llmgate", "llmgate-redis"]
    if args.peers:
        names += ["litellm", "portkey"]
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
                                 "version": target.version, "pid": target.child.pid}
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


def quick_verdict(rows: list[dict[str, Any]], loads: list[Load]) -> dict[str, Any]:
    problems = []
    for row, shape in zip(rows, loads, strict=True):
        where = f"{row['mode']} c={row['concurrency']}"
        if row["errors"] or row["ok"] < shape.requests:
            problems.append(f"{where}: {row['ok']}/{shape.requests} answered, "
                            f"errors {row['error_samples']}")
        if not row["p50"] < row["direct"]["p50"] + QUICK_SLACK_MS:
            problems.append(f"{where}: p50 {row['p50']:.2f} ms vs direct "
                            f"{row['direct']['p50']:.2f} ms")
        if row["rps"] * QUICK_RPS_FACTOR < row["direct"]["rps"]:
            problems.append(f"{where}: {row['rps']:.0f} req/s vs direct "
                            f"{row['direct']['rps']:.0f} req/s")
    return {"ok": not problems, "problems": problems}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark llmgate against the direct path "
                                     "and (with --peers) LiteLLM and Portkey.")
    parser.add_argument("--quick", action="store_true", help="< 1 minute regression check")
    parser.add_argument("--peers", action="store_true", help="also install and run the peers")
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
        args.profile, args.peers = False, False
    out = args.out_dir or (RESULTS / "tmp" / "quick" if args.quick else RESULTS)
    # Quick runs with --out-dir keep their logs beside the verdict (tests read them).
    work = (args.out_dir / "work") if args.out_dir and args.quick else \
        RESULTS / "tmp" / ("quick" if args.quick else "full")
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    loads = quick_loads() if args.quick else full_loads(args.scale)
    started = time.monotonic()
    rows, systems = run_systems(args, work, loads, 1 if args.quick else args.repeats)
    result = {"machine": machine(), "rows": rows, "systems": systems,
              "settings": {"repeats": 1 if args.quick else args.repeats,
                           "first_byte_ms": args.first_byte_ms, "chunks": args.chunks,
                           "chunk_delay_ms": args.chunk_delay_ms,
                           "loads": [vars(s) for s in loads]},
              "seconds": round(time.monotonic() - started, 1)}
    if args.quick:
        llmgate_rows = [r for r in rows if r["system"] == "llmgate"]
        verdict = quick_verdict(llmgate_rows, loads) if len(llmgate_rows) == len(loads) \
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
