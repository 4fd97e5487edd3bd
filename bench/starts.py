"""Cold starts of `llmgate sidecar`: `.venv/bin/python bench/starts.py [DIR ...] [--starts N]`.

Each start execs `llmgate sidecar` (in-memory store, the benchmark's compiled config, pinned
to the gateway core with nothing else running there) and records the seconds from exec to
`/readyz` 200, the CPU seconds it used until then (what a loaded machine does not inflate),
its resident set then and 0.5 s later (when start-up garbage has settled). With several
checkouts (`.` is the installed package, anything else a `git archive` of a commit, run
with PYTHONPATH like `run.py --source`) the starts alternate between them, so drift of the
shared machine hits each alike, and one table compares them: median [min-max] of each
figure and the modules the sidecar holds once its app is built. `--redis` starts a
`redis-server` on loopback and adds, for each checkout, starts with `--redis-url` (how every
deployment that shares limits and budgets runs), alternated with the in-memory ones.
`run.py` times its cold starts with `cold_start` too.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from peers import llmgate_env, start_llmgate
from procs import free_port, rss_mb, start_redis

BENCH = Path(__file__).resolve().parent

# The modules `llmgate sidecar` holds once its app is built (as tests/sidecar/
# test_lean_imports.py imports it), counted in a fresh interpreter of the same checkout.
MODULES = """
import sys
from llmgate_cli import main
from llmgate_sidecar.server import main as sidecar_main
from llmgate_sidecar.app import create_app
from llmgate_sidecar.settings import SidecarSettings
create_app(SidecarSettings(config_dir=sys.argv[1], credentials_dir=sys.argv[2],
                           redis_url=sys.argv[3] or None))
print(len(sys.modules))
"""


def cold_start(work: Path, source: Path | None, name: str = "llmgate-start",
               redis_url: str | None = None) -> dict[str, float]:
    """One cold start of `llmgate sidecar` from `source` (None: the installed package)."""
    target = start_llmgate(name, free_port(), work, source=source, redis_url=redis_url)
    try:
        time.sleep(0.5)
        assert target.child is not None
        return {"start_s": target.start_s, "start_cpu_s": target.start_cpu_s,
                "rss_at_ready_mb": target.start_rss_mb, "rss_mb": rss_mb(target.child.pid)}
    finally:
        target.stop()


def describe(start: dict[str, float]) -> str:
    return (f"{start['start_s']:.3f} s to /readyz ({start['start_cpu_s']:.2f} s CPU), RSS "
            f"{start['rss_at_ready_mb']:.1f} MiB then, {start['rss_mb']:.1f} MiB 0.5 s later")


def modules(work: Path, source: Path | None, name: str, redis_url: str | None) -> int:
    root = work / f"{name}-mounts"
    env, _ = llmgate_env(source)
    done = subprocess.run([sys.executable, "-c", MODULES, str(root / "config"),
                           str(root / "credentials"), redis_url or ""], env=env,
                          capture_output=True, text=True, check=True, timeout=120)
    return int(done.stdout.split()[-1])


def spread(values: list[float], digits: int) -> str:
    return (f"{statistics.median(values):.{digits}f} "
            f"[{min(values):.{digits}f}-{max(values):.{digits}f}]")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="*", type=Path, default=[Path(".")],
                        help="checkouts to start (`.`: the installed package)")
    parser.add_argument("--starts", type=int, default=5, help="cold starts of each")
    parser.add_argument("--redis", action="store_true",
                        help="also start each checkout with --redis-url (a loopback redis-server)")
    args = parser.parse_args(argv)
    work = BENCH / "results" / "tmp" / "starts"
    work.mkdir(parents=True, exist_ok=True)
    redis, redis_url = start_redis(work) if args.redis else (None, None)
    try:
        stores = [None, redis_url] if redis_url else [None]
        sides = [(f"s{i}", None if str(s) == "." else s.resolve(), str(s), url)
                 for i, s in enumerate(args.sources) for url in stores]
        samples: dict[str, list[dict[str, float]]] = {}
        for round_ in range(args.starts):
            order = sides if round_ % 2 == 0 else sides[::-1]
            for name, source, label, url in order:
                key = f"{name}-redis" if url else name
                samples.setdefault(key, []).append(cold_start(work, source, name, url))
                print(f"{label}{' redis' if url else ''}: {describe(samples[key][-1])}",
                      file=sys.stderr, flush=True)
        print(f"`llmgate sidecar`, {args.starts} cold starts each, alternated, "
              "median [min-max]:\n")
        print("| checkout | store | exec → /readyz wall (s) | CPU (s) | RSS at ready (MiB) | "
              "RSS 0.5 s later (MiB) | modules |")
        print("|---|---|---|---|---|---|---|")
        for name, source, label, url in sides:
            runs = samples[f"{name}-redis" if url else name]
            print(f"| {label} | {'Redis' if url else 'in memory'} | "
                  f"{spread([r['start_s'] for r in runs], 3)} | "
                  f"{spread([r['start_cpu_s'] for r in runs], 2)} | "
                  f"{spread([r['rss_at_ready_mb'] for r in runs], 1)} | "
                  f"{spread([r['rss_mb'] for r in runs], 1)} | "
                  f"{modules(work, source, name, url)} |")
    finally:
        if redis is not None:
            redis.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
