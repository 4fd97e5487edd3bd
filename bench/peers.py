"""The systems under test: llmgate (in-memory or Redis), and the peers LiteLLM and Portkey.

Each `start_*` starts one system pinned to the gateway core, waits until it answers, and
returns a `Target` (where to send requests, with which headers, and the process to sample
and stop). The peers are installed on first use into `bench/.peers/` (git-ignored, never
committed): LiteLLM's proxy into its own venv from PyPI, Portkey's gateway from npm with
`@hono/node-server` pinned to 1.13.5 (newer releases break its streaming).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from procs import (
    BENCH_KEY,
    GATEWAY_CPU,
    UPSTREAM_KEY,
    Child,
    cpu_seconds,
    free_port,
    llmgate_config,
    rss_mb,
    wait_http,
)

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEERS = BENCH / ".peers"
LITELLM_MASTER_KEY = "sk-bench-master-key"
HONO_NODE_SERVER = "1.13.5"


@dataclass
class Target:
    name: str
    url: str
    headers: list[str] = field(default_factory=list)
    child: Child | None = None
    version: str = ""
    start_s: float = math.nan  # exec to ready (llmgate: /readyz 200)
    start_cpu_s: float = math.nan  # CPU time (user + system) it took to get ready
    start_rss_mb: float = math.nan  # resident set when it became ready

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()


def llmgate_binary() -> str:
    candidate = Path(sys.executable).parent / "llmgate"
    return str(candidate) if candidate.exists() else "llmgate"


COMPILE = """
import sys
from pathlib import Path
from llmgate_cli.dev import DevCompiler
DevCompiler([sys.argv[1]], "default", Path(sys.argv[2])).compile_once()
"""


def llmgate_env(source: Path | None) -> tuple[dict[str, str], list[str]]:
    """The environment and command of `llmgate`: the installed one, or from `source` (another
    checkout of the repository, e.g. a `git archive` of a commit). Its sources are
    byte-compiled first, as in an image (pip compiles what it installs): with
    PYTHONDONTWRITEBYTECODE set, a start would otherwise compile every module it imports
    from a fresh checkout (≈ 70 ms of CPU and 0.8 MiB more than from compiled files)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    tree = ROOT if source is None else source.resolve()
    # PYTHONPATH is searched before the editable install's finder, so these win; a missing
    # directory would silently run the installed package instead.
    roots = [str(tree / d) for d in ("contract", "operator", "sidecar", "cli")]
    missing = [r for r in roots if not Path(r).is_dir()]
    if missing:
        raise FileNotFoundError(f"not a checkout of llmgate: {', '.join(missing)} missing")
    subprocess.run([sys.executable, "-m", "compileall", "-q", *roots], check=True,
                   timeout=300, stdout=subprocess.DEVNULL,
                   env={k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"})
    if source is None:
        return env, [llmgate_binary()]
    env["PYTHONPATH"] = os.pathsep.join(roots)
    return env, [sys.executable, "-m", "llmgate_cli"]


def compile_llmgate(name: str, upstream_port: int, work: Path,
                    source: Path | None = None) -> Path:
    """Compile the benchmark's CRs into the two directories the operator would mount
    (`<root>/config`, `<root>/credentials`), as `llmgate dev` does; returns the root."""
    config, root = work / f"{name}.yaml", work / f"{name}-mounts"
    config.write_text(llmgate_config(upstream_port))
    env, _ = llmgate_env(source)
    subprocess.run([sys.executable, "-c", COMPILE, str(config), str(root)], env=env,
                   check=True, timeout=120, stdout=subprocess.DEVNULL)
    return root


def start_llmgate(name: str, upstream_port: int, work: Path, *,
                  redis_url: str | None = None, source: Path | None = None) -> Target:
    """`llmgate sidecar` (the data plane as it runs in a pod) on the compiled benchmark
    config. Records the time from exec to `/readyz` 200 (polled every 5 ms), the CPU time
    it used to get there (what a loaded machine does not inflate) and the resident set then."""
    root = compile_llmgate(name, upstream_port, work, source)
    port, ops = free_port(), free_port()
    env, command = llmgate_env(source)
    argv = [*command, "sidecar", "--config-dir", str(root / "config"),
            "--credentials-dir", str(root / "credentials"), "--port", str(port),
            "--ops-port", str(ops), "--ops-host", "127.0.0.1"]
    # At its default log level, as in a pod: one JSON line per request (to the log file).
    if redis_url:
        argv += ["--redis-url", redis_url]
    started = time.monotonic()
    child = Child(name, argv, cpu=GATEWAY_CPU, log_dir=work, env=env)
    wait_http(f"http://127.0.0.1:{ops}/readyz", child, 60, every=0.005)
    target = Target(name, f"http://127.0.0.1:{port}/v1/chat/completions",
                    [f"Authorization: Bearer {BENCH_KEY}"], child)
    target.start_s = time.monotonic() - started
    target.start_cpu_s = cpu_seconds(child.pid)
    target.start_rss_mb = rss_mb(child.pid)
    return target


def run_quiet(argv: list[str], log: Path, cwd: Path | None = None) -> None:
    with log.open("ab") as out:
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                              check=False, timeout=1200)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}); see {log}")


def install_litellm() -> Path:
    venv = PEERS / "litellm"
    binary = venv / "bin" / "litellm"
    if not binary.exists():
        PEERS.mkdir(parents=True, exist_ok=True)
        log = PEERS / "litellm-install.log"
        run_quiet([sys.executable, "-m", "venv", str(venv)], log)
        run_quiet([str(venv / "bin" / "pip"), "install", "-q", "litellm[proxy]"], log)
    return binary


def package_version(python: Path, name: str) -> str:
    done = subprocess.run([str(python), "-c",
                           f"import importlib.metadata as m; print(m.version({name!r}))"],
                          capture_output=True, text=True, check=False)
    return done.stdout.strip()


def start_litellm(upstream_port: int, work: Path) -> Target:
    binary = install_litellm()
    config = work / "litellm.yaml"
    config.write_text(json.dumps({
        "model_list": [{"model_name": "bench-model", "litellm_params": {
            "model": "openai/bench-model", "api_base": f"http://127.0.0.1:{upstream_port}/v1",
            "api_key": UPSTREAM_KEY}}],
        "litellm_settings": {"telemetry": False, "drop_params": True},
        "general_settings": {"master_key": LITELLM_MASTER_KEY}}))
    port = free_port()
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "LITELLM_MASTER_KEY": LITELLM_MASTER_KEY, "LITELLM_LOG": "ERROR",
           "NO_PROXY": "*", "DISABLE_ADMIN_UI": "True"}
    child = Child("litellm", [str(binary), "--config", str(config), "--host", "127.0.0.1",
                              "--port", str(port), "--num_workers", "1"],
                  cpu=GATEWAY_CPU, log_dir=work, env=env)
    wait_http(f"http://127.0.0.1:{port}/health/liveliness", child, 180)
    version = package_version(binary.parent / "python", "litellm")
    return Target("litellm", f"http://127.0.0.1:{port}/v1/chat/completions",
                  [f"Authorization: Bearer {LITELLM_MASTER_KEY}"], child, version)


def install_portkey() -> Path:
    folder = PEERS / "portkey"
    entry = folder / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    if not entry.exists():
        if shutil.which("npm") is None:
            raise RuntimeError("npm is not installed; Portkey's gateway needs Node.js")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "package.json").write_text(json.dumps({
            "name": "llmgate-bench-portkey", "private": True,
            "dependencies": {"@portkey-ai/gateway": "*"},
            "overrides": {"@hono/node-server": HONO_NODE_SERVER}}, indent=2))
        run_quiet(["npm", "install", "--no-audit", "--no-fund"], PEERS / "portkey-install.log",
                  cwd=folder)
    return entry


def start_portkey(upstream_port: int, work: Path) -> Target:
    entry = install_portkey()
    node = shutil.which("node") or "node"
    port = free_port()
    child = Child("portkey", [node, str(entry), f"--port={port}", "--headless"],
                  cpu=GATEWAY_CPU, log_dir=work, env={**os.environ, "NODE_ENV": "production"})
    wait_http(f"http://127.0.0.1:{port}/", child, 60, ok=())
    manifest = entry.parent.parent / "package.json"
    version = json.loads(manifest.read_text()).get("version", "")
    return Target("portkey", f"http://127.0.0.1:{port}/v1/chat/completions",
                  ["x-portkey-provider: openai",
                   f"x-portkey-custom-host: http://127.0.0.1:{upstream_port}/v1",
                   f"Authorization: Bearer {UPSTREAM_KEY}"], child, version)
