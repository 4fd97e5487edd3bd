"""Child processes of the benchmark: start pinned, wait until they answer, sample, stop.

`run.py` and `peers.py` start everything through `Child` (a `taskset`-pinned `Popen` with its
output in a log file) and stop every child by its PID, whatever happens. CPU time and peak
RSS come from `/proc/<pid>` of the child and all its descendants. Nothing here knows what a
gateway is; the llmgate config and Redis helpers at the bottom are the only specifics.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
GATEWAY_CPU = "0"  # the core under test
HARNESS_CPU = "1"  # upstream, load generator, Redis


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(argv: list[str], cpu: str) -> list[str]:
    """Pin to one core when there are cores to spare and taskset exists."""
    if os.cpu_count() and (os.cpu_count() or 1) > 1 and shutil.which("taskset"):
        return ["taskset", "-c", cpu, *argv]
    return argv


class Child:
    """One started process; `stop()` ends it (and its process group) by PID."""

    def __init__(self, name: str, argv: list[str], *, cpu: str, log_dir: Path,
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(pinned(argv, cpu), stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                     start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self, grace: float = 10.0) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


def wait_http(url: str, child: Child, seconds: float, ok: tuple[int, ...] = (200,),
              every: float = 0.1) -> None:
    """Poll `url` every `every` seconds until it answers one of `ok` (any answer when `ok`
    is empty)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited early:\n{child.output()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if not ok or response.status in ok:
                    return
        except urllib.error.HTTPError as exc:
            if not ok or exc.code in ok:
                return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(every)
    raise RuntimeError(f"{child.name} did not answer {url} within {seconds:.0f}s:\n"
                       f"{child.output()}")


def wait_port(port: int, child: Child, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited early:\n{child.output()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{child.name} did not listen on {port}:\n{child.output()}")


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (taskset execs, so the child is the real process)."""
    found, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            children = task / "children"
            with contextlib.suppress(OSError):
                for child in children.read_text().split():
                    found.append(int(child))
                    frontier.append(int(child))
    return sorted(set(found))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` and its descendants so far."""
    total = 0
    for proc in descendants(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{proc}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def _status_mb(pid: int, field: str) -> float:
    total_kb = 0
    for proc in descendants(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{proc}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total_kb += int(line.split()[1])
    return total_kb / 1024


def peak_rss_mb(pid: int) -> float:
    """Peak resident set (VmHWM) summed over `pid` and its descendants, in MiB."""
    return _status_mb(pid, "VmHWM")


def rss_mb(pid: int) -> float:
    """Resident set now (VmRSS) summed over `pid` and its descendants, in MiB."""
    return _status_mb(pid, "VmRSS")


def start_redis(log_dir: Path) -> tuple[Child, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    child = Child("redis", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no"], cpu=HARNESS_CPU, log_dir=log_dir)
    wait_port(port, child, 10)
    return child, f"redis://127.0.0.1:{port}/0"


BENCH_KEY = "lg-bench-key-0123456789"
UPSTREAM_KEY = "sk-upstream-bench"


def llmgate_config(upstream_port: int) -> str:
    """A realistic namespace: an openai-compatible provider with a key, a route with two
    aliases and a retry, a VirtualKey with rate limits, a budget and metadata."""
    return f"""\
apiVersion: llmgate.io/v1alpha1
kind: ProviderSecret
metadata: {{name: fake-openai}}
spec:
  provider: openai-compatible
  baseURL: http://127.0.0.1:{upstream_port}/v1
  apiKey:
    secretKeyRef: {{name: upstream-keys, key: fake}}
  pricing:
    bench-model: {{inputPerMillion: "0.15", outputPerMillion: "0.60"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: upstream-keys}}
stringData: {{fake: {UPSTREAM_KEY}}}
---
apiVersion: llmgate.io/v1alpha1
kind: LLMRoute
metadata: {{name: bench-model}}
spec:
  aliases: [default, fast]
  strategy: fallback
  targets:
    - {{provider: fake-openai, model: bench-model, timeout: 30s}}
  retry: {{attempts: 2}}
---
apiVersion: llmgate.io/v1alpha1
kind: VirtualKey
metadata: {{name: bench}}
spec:
  models: [bench-model]
  limits: {{requestsPerMinute: 100000000, maxParallel: 1000}}
  budget: {{limit: "100000000.00", period: 1d}}
  metadata: {{team: bench}}
---
apiVersion: v1
kind: Secret
metadata: {{name: bench-llmgate-key}}
stringData: {{api-key: {BENCH_KEY}}}
"""
