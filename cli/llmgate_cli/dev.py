"""`llmgate dev`: the whole gateway on one machine, from the same CR YAML a cluster would get.

Reads CR files (and Secret manifests standing in for cluster Secrets), compiles them with the
operator's own `compile_namespace`, writes the result the way kubelet mounts it (a config
directory and a credentials directory in a private temp dir), and runs the sidecar on it.
Edits to the files are recompiled and hot-reloaded. VirtualKeys without a Secret get a key
generated once and printed. Two `llmgate dev` on the same files and Redis act as replicas.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmgate_contract import bundle_files
from llmgate_operator.api import default_secret_name
from llmgate_operator.compile import API_KEY_DATA_KEY, Compilation, compile_namespace
from llmgate_sidecar.observability import logs
from llmgate_sidecar.server import install_fast_loop, serve
from llmgate_sidecar.settings import SidecarSettings

from llmgate_cli.checks import Checked, Key, check, compile_checked
from llmgate_cli.manifests import (
    CR,
    Document,
    InputError,
    Problem,
    classify,
    read_file,
    yaml_files,
)

log = logging.getLogger("llmgate.dev")


def ensure_keys(checked: Checked, namespace: str,
                generated: dict[str, str]) -> list[tuple[str, str]]:
    """Give every VirtualKey without a Secret a key (once per process); return new ones."""
    new: list[tuple[str, str]] = []
    secrets_ = checked.secrets.setdefault(namespace, {})
    for (_, kind, name), doc in sorted(checked.valid.items()):
        if kind != "VirtualKey":
            continue
        spec = doc.obj.get("spec") or {}
        secret = spec.get("secretName") or default_secret_name(name)
        if secrets_.get(secret, {}).get(API_KEY_DATA_KEY):
            continue
        if secret not in generated:
            generated[secret] = "lg-" + secrets.token_urlsafe(32)
            new.append((name, generated[secret]))
        secrets_.setdefault(secret, {})[API_KEY_DATA_KEY] = generated[secret]
    return new


def write_volume(directory: Path, files: Mapping[str, str]) -> None:
    """Replace the files of a directory one by one, atomically each (like a mounted volume)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        tmp = directory / f".{name}.tmp"
        tmp.write_text(text)
        tmp.chmod(0o600)
        os.replace(tmp, directory / name)
    for stale in directory.iterdir():
        if not stale.name.startswith(".") and stale.name not in files:
            stale.unlink()


@dataclass(frozen=True)
class Outcome:
    """One compile of the input files: what is served and what was rejected."""

    result: Compilation
    rejected: list[Problem]
    """Errors of the inputs; an invalid edit of a CR keeps its last good version served."""
    stale: dict[str, str]
    """`Kind/name` -> where its last good version came from, for CRs served that way."""


class DevCompiler:
    """Recompiles the input files into the two directories whenever the files change.

    Like the operator, a CR whose new version is invalid keeps its last valid version in
    service (in memory here: a restart starts from the files as they are)."""

    def __init__(self, paths: list[str], namespace: str, root: Path) -> None:
        self.paths, self.namespace = paths, namespace
        self.config_dir, self.credentials_dir = root / "config", root / "credentials"
        self._generated: dict[str, str] = {}
        self._stamp: tuple[tuple[str, float, int], ...] = ()
        self._last_good: dict[Key, Document] = {}
        self._parsed: dict[str, list[Document]] = {}
        self.last: Outcome | None = None

    def _current_stamp(self) -> tuple[tuple[str, float, int], ...]:
        stamps = []
        for path in yaml_files(self.paths):
            st = path.stat()
            stamps.append((str(path), st.st_mtime, st.st_size))
        return tuple(stamps)

    def _load(self) -> tuple[list[Document], list[Problem], dict[str, str]]:
        """Every file's documents; a file that is not valid YAML (a half-saved edit) counts
        as it last parsed, so what it held is not deleted (listed in the third item)."""
        docs: list[Document] = []
        problems: list[Problem] = []
        held: dict[str, str] = {}
        for path in yaml_files(self.paths):
            found, trouble = read_file(path)
            if trouble:
                found = self._parsed.get(str(path), [])
                held |= {doc.label: f"{path} as it last parsed" for doc in found
                         if classify(doc)[0] == CR}
            else:
                self._parsed[str(path)] = found
            docs += found
            problems += trouble
        return docs, problems, held

    def check(self) -> tuple[Checked, list[Problem], Compilation, dict[str, str]]:
        """Read, check and compile the files (writes nothing)."""
        docs, problems, held = self._load()
        checked = check(docs, namespace=self.namespace, problems=problems, override=True)
        for name, key in ensure_keys(checked, self.namespace, self._generated):
            print(f"llmgate dev: generated a key for VirtualKey {name!r}: {key}", flush=True)
        keep = {key: doc for key, doc in self._last_good.items() if key in checked.invalid}
        results, semantic = compile_checked(
            checked, now=datetime.now(UTC), placeholder_keys=False,
            extra={key: doc.obj for key, doc in keep.items()})
        result = results.get(self.namespace) or compile_namespace(
            self.namespace, [], {}, now=datetime.now(UTC))
        stale = held | {f"{k[1]}/{k[2]}": str(doc.start) for k, doc in keep.items()}
        return checked, checked.problems + semantic, result, stale

    def compile_once(self) -> Outcome:
        self._stamp = self._current_stamp()
        checked, problems, result, stale = self.check()
        self._last_good = {k: v for k, v in self._last_good.items() if k in checked.invalid}
        self._last_good.update(checked.valid)
        for problem in problems:
            if problem.severity != "notice":
                log.warning("%s", problem)
        for label, where in sorted(stale.items()):
            log.warning("%s: still serving its last valid version (%s)", label, where)
        config_data, secret_data = bundle_files(result.config, result.credentials)
        # Credentials first: the sidecar only swaps when both carry the same generation.
        write_volume(self.credentials_dir, secret_data)
        write_volume(self.config_dir, config_data)
        self.last = Outcome(result=result, rejected=[p for p in problems if p.severity == "error"],
                            stale=stale)
        return self.last

    def readiness(self) -> dict[str, Any]:
        """What `/readyz` adds in dev mode: the input errors, and what is served instead."""
        outcome = self.last
        if outcome is None or not outcome.rejected:
            return {"inputs": "ok"}
        return {"inputs": "rejected",
                "inputErrors": [str(p) for p in outcome.rejected],
                "servingLastGood": outcome.stale}

    async def watch(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                if self._current_stamp() == self._stamp:
                    continue
                outcome = self.compile_once()
                log.info("recompiled", extra={"generation": outcome.result.config.generation})
            except (InputError, OSError) as exc:
                log.error("not recompiled, keeping the last config: %s", exc)


def banner(settings: SidecarSettings, result: Compilation) -> str:
    models = sorted({m for r in result.config.routes for m in (r.model, *r.aliases)})
    base = f"http://{settings.host}:{settings.port}/v1"
    return (f"llmgate dev: serving {len(result.config.routes)} route(s) "
            f"({', '.join(models) or 'none'}) at {base}\n"
            f"  ops: http://{settings.ops_host}:{settings.ops_port}/metrics  "
            f"(/healthz, /readyz)\n"
            f"  try: curl {base}/chat/completions -H 'Authorization: Bearer <key>' "
            f"-H 'Content-Type: application/json' "
            f"-d '{{\"model\": \"{models[0] if models else 'MODEL'}\", "
            f"\"messages\": [{{\"role\": \"user\", \"content\": \"hi\"}}]}}'")


async def run(compiler: DevCompiler, settings_in: SidecarSettings) -> None:
    outcome = compiler.compile_once()
    settings = SidecarSettings(**{**vars(settings_in),
                                  "config_dir": str(compiler.config_dir),
                                  "credentials_dir": str(compiler.credentials_dir)})
    watcher = asyncio.create_task(compiler.watch(), name="llmgate-dev-watch")
    try:
        await serve(settings, ready=lambda s: print(banner(s, outcome.result), flush=True),
                    readiness=compiler.readiness)
    finally:
        watcher.cancel()


def preflight(compiler: DevCompiler, *, strict: bool) -> str | None:
    """Why dev must not start (None: start): `--strict` and any error, no CR at all, or
    every CR invalid. The problems themselves go to stderr."""
    checked, problems, _, _ = compiler.check()
    errors = [p for p in problems if p.severity == "error"]
    crs = len(checked.valid) + checked.rejected
    if strict or not checked.valid:
        for problem in problems:
            if problem.severity != "notice":
                print(problem, file=sys.stderr)
    if strict and errors:
        return f"--strict: {len(errors)} error(s) in the input files; not starting"
    if not crs:
        return f"no llmgate resources in {', '.join(compiler.paths)}"
    if not checked.valid:
        return f"every llmgate resource ({checked.rejected}) is invalid; nothing to serve"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="llmgate dev", description="Run llmgate locally from CR YAML files.")
    parser.add_argument("-f", "--filename", dest="paths", action="append", required=True,
                        help="CR YAML file or directory (repeatable)")
    env = os.environ.get
    parser.add_argument("--host", default=env("LLMGATE_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("LLMGATE_PORT", "4000")))
    parser.add_argument("--ops-port", type=int, default=int(env("LLMGATE_OPS_PORT", "9464")))
    parser.add_argument("--redis-url", default=env("LLMGATE_REDIS_URL") or None)
    parser.add_argument("--fail-mode", choices=("failOpen", "failClosed"),
                        default=env("LLMGATE_FAIL_MODE", "failOpen"),
                        help="when Redis fails: serve with per-process limits, or 503")
    parser.add_argument("--namespace", default=env("LLMGATE_NAMESPACE", "default"),
                        help="namespace the CRs are compiled for (default: default)")
    parser.add_argument("--log-level", default=env("LLMGATE_LOG_LEVEL", "info"))
    parser.add_argument("--strict", action="store_true",
                        help="refuse to start if any input has an error (as llmgate validate)")
    args = parser.parse_args(argv)
    logs.configure(args.log_level)
    settings = SidecarSettings(host=args.host, port=args.port, ops_host=args.host,
                               ops_port=args.ops_port, redis_url=args.redis_url,
                               fail_mode=args.fail_mode,
                               log_level=args.log_level, reload_interval=0.5,
                               shutdown_grace=5.0)
    root = Path(tempfile.mkdtemp(prefix="llmgate-dev-"))
    try:
        compiler = DevCompiler(args.paths, args.namespace, root)
        try:
            refusal = preflight(compiler, strict=args.strict)
        except InputError as exc:
            print(f"llmgate dev: {exc}", file=sys.stderr)
            return 2
        if refusal is not None:
            print(f"llmgate dev: {refusal}", file=sys.stderr)
            return 1
        install_fast_loop()
        try:
            asyncio.run(run(compiler, settings))
        except OSError as exc:
            print(f"llmgate dev: {exc}", file=sys.stderr)
            return 1
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)
