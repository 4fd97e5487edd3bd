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
import base64
import binascii
import logging
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from llmgate_contract import bundle_files
from llmgate_operator.api import API_VERSION, default_secret_name
from llmgate_operator.compile import API_KEY_DATA_KEY, Compilation, compile_namespace
from llmgate_sidecar.observability import logs
from llmgate_sidecar.server import install_fast_loop, serve
from llmgate_sidecar.settings import SidecarSettings

log = logging.getLogger("llmgate.dev")
CR_KINDS = frozenset({"ProviderSecret", "LLMRoute", "VirtualKey"})


class InputError(Exception):
    """The given files cannot be read as CRs; the message says which and why."""


@dataclass
class Inputs:
    resources: list[dict[str, Any]] = field(default_factory=list)
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)


def yaml_files(paths: Iterable[str]) -> list[Path]:
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*")
                                if p.suffix in (".yaml", ".yml") and p.is_file()))
        elif path.is_file():
            found.append(path)
        else:
            raise InputError(f"{raw}: no such file or directory")
    return found


def _secret_data(doc: Mapping[str, Any], where: str) -> dict[str, str]:
    data: dict[str, str] = {}
    for key, value in (doc.get("data") or {}).items():
        try:
            data[str(key)] = base64.b64decode(str(value), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise InputError(f"{where}: Secret data key {key!r} is not valid base64") from None
    data.update({str(k): str(v) for k, v in (doc.get("stringData") or {}).items()})
    return data


def load_inputs(paths: Iterable[str]) -> Inputs:
    inputs = Inputs()
    for path in yaml_files(paths):
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(f"{path}: {exc}") from None
        for index, doc in enumerate(docs):
            if doc is None:
                continue
            where = f"{path} (document {index + 1})"
            if not isinstance(doc, dict) or not isinstance(doc.get("metadata"), dict) \
                    or not doc["metadata"].get("name"):
                raise InputError(f"{where}: not a Kubernetes object with metadata.name")
            kind, api = doc.get("kind"), doc.get("apiVersion")
            if api == API_VERSION and kind in CR_KINDS:
                inputs.resources.append(doc)
            elif api == "v1" and kind == "Secret":
                inputs.secrets[doc["metadata"]["name"]] = _secret_data(doc, where)
            else:
                log.debug("ignoring %s %s in %s", api, kind, path)
    return inputs


def ensure_keys(inputs: Inputs, generated: dict[str, str]) -> list[tuple[str, str]]:
    """Give every VirtualKey without a Secret a key (once per process); return new ones."""
    new: list[tuple[str, str]] = []
    for body in inputs.resources:
        if body["kind"] != "VirtualKey":
            continue
        name = body["metadata"]["name"]
        spec = body.get("spec") or {}
        secret = spec.get("secretName") or default_secret_name(name)
        if inputs.secrets.get(secret, {}).get(API_KEY_DATA_KEY):
            continue
        if secret not in generated:
            generated[secret] = "lg-" + secrets.token_urlsafe(32)
            new.append((name, generated[secret]))
        inputs.secrets.setdefault(secret, {})[API_KEY_DATA_KEY] = generated[secret]
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


class DevCompiler:
    """Recompiles the input files into the two directories whenever the files change."""

    def __init__(self, paths: list[str], namespace: str, root: Path) -> None:
        self.paths, self.namespace = paths, namespace
        self.config_dir, self.credentials_dir = root / "config", root / "credentials"
        self._generated: dict[str, str] = {}
        self._stamp: tuple[tuple[str, float, int], ...] = ()

    def _current_stamp(self) -> tuple[tuple[str, float, int], ...]:
        stamps = []
        for path in yaml_files(self.paths):
            st = path.stat()
            stamps.append((str(path), st.st_mtime, st.st_size))
        return tuple(stamps)

    def compile_once(self) -> Compilation:
        self._stamp = self._current_stamp()
        inputs = load_inputs(self.paths)
        for name, key in ensure_keys(inputs, self._generated):
            print(f"llmgate dev: generated a key for VirtualKey {name!r}: {key}", flush=True)
        result = compile_namespace(self.namespace, inputs.resources, inputs.secrets,
                                   now=datetime.now(UTC))
        for (kind, name), condition in sorted(result.conditions.items()):
            if not condition.ready:
                log.warning("%s %s is not ready: %s: %s", kind, name, condition.reason,
                            condition.message)
        config_data, secret_data = bundle_files(result.config, result.credentials)
        # Credentials first: the sidecar only swaps when both carry the same generation.
        write_volume(self.credentials_dir, secret_data)
        write_volume(self.config_dir, config_data)
        return result

    async def watch(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                if self._current_stamp() == self._stamp:
                    continue
                result = self.compile_once()
                log.info("recompiled", extra={"generation": result.config.generation})
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


async def run(paths: list[str], settings_in: SidecarSettings, namespace: str) -> None:
    root = Path(tempfile.mkdtemp(prefix="llmgate-dev-"))
    try:
        compiler = DevCompiler(paths, namespace, root)
        result = compiler.compile_once()
        settings = SidecarSettings(**{**vars(settings_in),
                                      "config_dir": str(compiler.config_dir),
                                      "credentials_dir": str(compiler.credentials_dir)})
        watcher = asyncio.create_task(compiler.watch(), name="llmgate-dev-watch")
        try:
            await serve(settings, ready=lambda s: print(banner(s, result), flush=True))
        finally:
            watcher.cancel()
    finally:
        shutil.rmtree(root, ignore_errors=True)


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
    parser.add_argument("--namespace", default=env("LLMGATE_NAMESPACE", "default"),
                        help="namespace the CRs are compiled for (default: default)")
    parser.add_argument("--log-level", default=env("LLMGATE_LOG_LEVEL", "info"))
    args = parser.parse_args(argv)
    logs.configure(args.log_level)
    settings = SidecarSettings(host=args.host, port=args.port, ops_host=args.host,
                               ops_port=args.ops_port, redis_url=args.redis_url,
                               log_level=args.log_level, reload_interval=0.5,
                               shutdown_grace=5.0)
    try:
        load_inputs(args.paths)
    except InputError as exc:
        print(f"llmgate dev: {exc}", file=sys.stderr)
        return 2
    install_fast_loop()
    try:
        asyncio.run(run(args.paths, settings, args.namespace))
    except OSError as exc:
        print(f"llmgate dev: {exc}", file=sys.stderr)
        return 1
    return 0
