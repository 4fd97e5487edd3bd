"""Loads the compiled config from the two mounted volumes and hot-reloads it.

Polls both directories (kubelet swaps a ConfigMap/Secret volume atomically through its
`..data` symlink; we read the visible files). On a change it swaps to the new `Runtime` only
if both volumes carry the same generation and the config validates; otherwise it keeps the
last good one, counts the failure and reports it on `/readyz`. Owned by the app (a
`cleanup_ctx` task); requests only read `current`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from llmgate_contract import RefusedConfig, TornBundleError, read_bundle

from llmgate_sidecar.config.runtime import Runtime
from llmgate_sidecar.upstream.transport import Transports

log = logging.getLogger("llmgate.sidecar")
MAX_FILE_BYTES = 8 * 1024 * 1024


def read_dir(path: Path) -> dict[str, str]:
    """Visible regular files of a mounted volume (kubelet's `..data` entries are skipped)."""
    files: dict[str, str] = {}
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except FileNotFoundError:
        return files
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_file():
            continue
        with open(entry.path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise TornBundleError(f"{entry.name} is larger than {MAX_FILE_BYTES} bytes")
        files[entry.name] = data.decode("utf-8")
    return files


class ConfigSource:
    """The current Runtime, the last load error, and the poller that keeps them fresh."""

    def __init__(self, config_dir: Path, credentials_dir: Path, transports: Transports, *,
                 on_reload: Callable[[str, str | None, int | None, int], None] | None = None,
                 interval: float = 1.0) -> None:
        self.config_dir, self.credentials_dir = config_dir, credentials_dir
        self.current: Runtime | None = None
        self.last_error: str | None = None
        self.schema_version: int | None = None
        self.ignored: tuple[str, ...] = ()
        self.refused_schema: object = None
        """The schema version of the last config refused as too new, until one loads."""
        self._transports = transports
        self._fingerprint = b""
        # (result: success | error | refused, generation served, its schema version, the
        # number of fields left out): for the metrics.
        self._on_reload = on_reload or (lambda result, generation, schema, ignored: None)
        self._interval = interval

    def load(self) -> bool:
        """Read both volumes once; swap if they changed and form a valid config."""
        try:
            config_files = read_dir(self.config_dir)
            secret_files = read_dir(self.credentials_dir)
        except (OSError, UnicodeDecodeError, TornBundleError) as exc:
            return self._failed(f"cannot read config volumes: {exc}")
        fingerprint = _fingerprint(config_files, secret_files)
        if fingerprint == self._fingerprint:
            return False
        try:
            bundle = read_bundle(config_files, secret_files)
            runtime = Runtime.build(bundle, self._transports)
        except RefusedConfig as exc:
            self.refused_schema = exc.schema_version
            return self._failed(str(exc), fingerprint, result="refused")
        except TornBundleError as exc:
            return self._failed(str(exc), fingerprint)
        self._fingerprint = fingerprint
        previous = self.current.generation if self.current else None
        self.current, self.last_error, self.refused_schema = runtime, None, None
        self.schema_version, self.ignored = bundle.schema_version, bundle.ignored
        log.info("config loaded", extra={"generation": runtime.generation,
                                         "previous_generation": previous,
                                         "schema_version": bundle.schema_version,
                                         "routes": len(runtime.routes)})
        if bundle.ignored:
            # A newer operator's optional additions: safe to leave out by the skew policy.
            log.warning("config fields this sidecar does not know were left out",
                        extra={"generation": runtime.generation,
                               "fields": list(bundle.ignored[:20])})
        self._on_reload("success", runtime.generation, bundle.schema_version,
                        len(bundle.ignored))
        return True

    def _failed(self, message: str, fingerprint: bytes | None = None, *,
                result: str = "error") -> bool:
        if fingerprint is not None:
            # Remember the bad content so it is reported once, not every poll.
            self._fingerprint = fingerprint
        if message != self.last_error:
            kept = self.current.generation if self.current else None
            log.error("config not loaded, keeping generation %s: %s", kept or "none", message)
            self._on_reload(result, kept, self.schema_version, len(self.ignored))
        self.last_error = message
        return False

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.load()


def _fingerprint(config_files: dict[str, str], secret_files: dict[str, str]) -> bytes:
    digest = hashlib.sha256()
    for prefix, files in ((b"c", config_files), (b"s", secret_files)):
        for name, text in files.items():
            digest.update(prefix + name.encode() + b"\0" + text.encode() + b"\0")
    return digest.digest()
