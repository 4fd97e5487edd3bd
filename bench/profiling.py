"""Where the gateway's time goes: py-spy samples of the running gateway under load.

`profile_under_load()` drives the gateway with JSON requests at concurrency 16 while
`py-spy record` samples it from outside (no code change, no restart), then folds the raw
stacks into the functions with the most own time and the most inclusive time. Called by
`run.py` in a full run; skipped (with the reason recorded) when py-spy is missing or denied.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from measure import Load, load
from peers import Target
from procs import HARNESS_CPU, pinned

SECONDS = 8
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def short(frame: str) -> str:
    """'handle (aiohttp/web_protocol.py:512)' -> 'aiohttp/web_protocol.py:handle'."""
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/lib/python3", "sidecar/", "contract/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{match['func']}"


AREAS = (("llmgate_sidecar/", "llmgate sidecar code"), ("llmgate_contract/", "llmgate contract"),
         ("prometheus_client/", "prometheus_client (metrics)"), ("logging/", "logging"),
         ("aiohttp/client", "aiohttp client (upstream)"), ("aiohttp/", "aiohttp server"),
         ("multidict/", "aiohttp server"), ("yarl/", "yarl (URLs)"),
         ("pydantic", "pydantic"), ("asyncio/", "event loop (asyncio/uvloop)"))


def area(frame: str) -> str:
    """Which part of the process a frame belongs to, for the own-time summary."""
    match = FRAME.match(frame.strip())
    path = match["file"] if match else frame
    for marker, name in AREAS:
        if marker in path:
            return name
    return "other"


def fold(raw: str) -> dict[str, Any]:
    areas: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        raw_frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        frames = [short(f) for f in raw_frames]
        if not frames:
            continue
        total += count
        areas[area(raw_frames[-1])] += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    def top(counter: Counter[str], n: int) -> list[tuple[str, float]]:
        return [(name, round(100 * c / total, 1)) for name, c in counter.most_common(n)]
    return {"samples": total, "own": top(own, 15), "inclusive": top(inclusive, 40),
            "areas": top(areas, len(AREAS) + 1)}


def profile_under_load(target: Target, work: Path,
                       shape: Load | None = None) -> dict[str, Any]:
    binary = py_spy()
    if binary is None or target.child is None:
        return {"error": "py-spy is not installed (pip install py-spy)"}
    raw_path = work / "profile.txt"
    spy = subprocess.Popen(
        pinned([binary, "record", "--pid", str(target.child.pid), "--duration", str(SECONDS),
                "--rate", "250", "--format", "raw", "--nonblocking", "-o", str(raw_path)],
               HARNESS_CPU), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        load(target, shape or Load(False, 16, 10_000_000, SECONDS + 2.0, 0), work)
        output, _ = spy.communicate(timeout=60)
    finally:
        if spy.poll() is None:
            spy.kill()
            spy.wait()
    if spy.returncode != 0 or not raw_path.exists():
        return {"error": f"py-spy failed: {output.decode(errors='replace')[-500:]}"}
    return fold(raw_path.read_text())


def main(argv: list[str] | None = None) -> int:
    """`python bench/profiling.py [--stream] [--concurrency N] [--redis]`: one profile."""
    import argparse

    import orjson
    from peers import start_llmgate
    from procs import start_redis
    from run import upstream
    parser = argparse.ArgumentParser(description="py-spy profile of llmgate under load")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--redis", action="store_true")
    parser.add_argument("--source", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.first_byte_ms, args.chunks, args.chunk_delay_ms = 0.0, 20, 0.0
    work = Path(__file__).resolve().parent / "results" / "tmp" / "profile"
    work.mkdir(parents=True, exist_ok=True)
    with upstream(work, args) as direct:
        port = int(direct.url.split(":")[2].split("/")[0])
        redis, url = start_redis(work) if args.redis else (None, None)
        target = start_llmgate("llmgate", port, work, redis_url=url, source=args.source)
        try:
            result = profile_under_load(target, work, Load(args.stream, args.concurrency,
                                                           10_000_000, SECONDS + 2.0, 0))
        finally:
            target.stop()
            if redis is not None:
                redis.stop()
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2)
    if args.out:
        args.out.write_bytes(text)
    print(text.decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
