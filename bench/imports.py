"""What the sidecar's imports cost: modules, resident memory, Python allocations and time.

`python bench/imports.py [--repeats N]` imports, in a fresh interpreter each time, the
pieces `llmgate sidecar` is made of, cumulatively in the order below (each step adds what
the steps before it did not already import), and prints a Markdown table: modules added,
VmRSS added (MiB), Python heap added (tracemalloc, MiB; a second interpreter, since tracing
slows imports), and the import time (ms, median over repeats, from the process's own clock).
Nothing is served; docs/performance.md quotes the table.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys

import orjson

STEPS = [
    ("ssl", "ssl (OpenSSL)"),
    ("asyncio", "asyncio"),
    ("uvloop", "uvloop"),
    ("aiohttp.web", "aiohttp (server and client, without its import-time CA loads: "
                    "`upstream.tls.import_aiohttp`, as `llmgate sidecar` imports it)"),
    ("orjson", "orjson"),
    ("msgspec", "msgspec"),
    ("llmgate_contract.config", "llmgate_contract (config structs)"),
    ("prometheus_client", "prometheus_client"),
    ("llmgate_sidecar.server", "llmgate_sidecar (everything else of `llmgate sidecar`)"),
    ("re2", "re2 (only once a route has blockPatterns)"),
    ("llmgate_contract.redis_client", "redis-py and llmgate's client builder (only with "
     "--redis-url; without redis-py's OpenTelemetry hook: `llmgate_contract.redis_import`)"),
    ("opentelemetry.sdk.metrics", "OpenTelemetry metrics SDK (what redis-py 8 imported where "
     "the SDK is installed; not in the sidecar image; row left out when not installed)"),
]

PROBE = """
import importlib, sys, time, tracemalloc, orjson
trace = sys.argv[1] == "1"
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
if trace:
    tracemalloc.start()
out = []
for name in sys.argv[2:]:
    modules, resident = len(sys.modules), rss()
    heap = tracemalloc.get_traced_memory()[0] if trace else 0
    started = time.perf_counter()
    if name == "aiohttp.web":
        from llmgate_sidecar.upstream.tls import import_aiohttp
        import_aiohttp()
    importlib.import_module(name)
    out.append({"name": name, "ms": (time.perf_counter() - started) * 1000,
                "modules": len(sys.modules) - modules, "rss": rss() - resident,
                "heap": ((tracemalloc.get_traced_memory()[0] - heap) / 2**20) if trace else 0,
                "total_rss": rss(), "total_modules": len(sys.modules)})
print(orjson.dumps(out).decode())
"""


def steps() -> list[tuple[str, str]]:
    """The steps whose package is installed here."""
    return [(name, label) for name, label in STEPS
            if importlib.util.find_spec(name.partition(".")[0]) is not None]


def probe(trace: bool) -> list[dict[str, float]]:
    done = subprocess.run([sys.executable, "-c", PROBE, "1" if trace else "0",
                           *(name for name, _ in steps())],
                          capture_output=True, text=True, check=True, timeout=120)
    return list(orjson.loads(done.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    runs = [probe(False) for _ in range(args.repeats)]
    heap = probe(True)
    first = runs[0]
    print(f"Python {sys.version.split()[0]}, interpreter with orjson (the probe uses it): "
          f"{first[0]['total_rss'] - first[0]['rss']:.1f} MiB, "
          f"{first[0]['total_modules'] - first[0]['modules']} modules; {args.repeats} runs.\n")
    print("| import (cumulative, in this order) | modules added | RSS added (MiB) | "
          "Python heap added (MiB) | time (ms, median [min-max]) | RSS so far (MiB) |")
    print("|---|---|---|---|---|---|")
    for i, (_name, label) in enumerate(steps()):
        times = [run[i]["ms"] for run in runs]
        rss = statistics.median(run[i]["rss"] for run in runs)
        total = statistics.median(run[i]["total_rss"] for run in runs)
        print(f"| {label} | {first[i]['modules']} | {rss:.1f} | {heap[i]['heap']:.1f} | "
              f"{statistics.median(times):.0f} [{min(times):.0f}-{max(times):.0f}] | "
              f"{total:.1f} |")


if __name__ == "__main__":
    main()
