"""Sidecar settings: one frozen dataclass, read once from flags/env in `server` and passed down.

Every field is also an environment variable `LLMGATE_<NAME>` (SPEC §4).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields

from llmgate_sidecar.upstream.transport import Bounds

_UPSTREAM = Bounds()


@dataclass(frozen=True)
class SidecarSettings:
    config_dir: str = "/etc/llmgate/config"
    """Mount of the `llmgate-config` ConfigMap (whole directory, never subPath)."""
    credentials_dir: str = "/etc/llmgate/credentials"
    """Mount of the `llmgate-credentials` Secret."""
    host: str = "127.0.0.1"
    """API listen address; pod-local by default."""
    port: int = 4000
    """API port (OpenAI-compatible, `/v1/...`)."""
    ops_host: str = "0.0.0.0"
    """Ops listen address: kubelet probes and Prometheus scrape it from outside the pod."""
    ops_port: int = 9464
    """`/healthz`, `/readyz`, `/metrics`."""
    redis_url: str | None = None
    """Shared limits, budgets and cache; in-memory per process when unset. `redis://`,
    `rediss://`, `redis+cluster://` or `redis+sentinel://` (docs/limits.md)."""
    cache_redis_url: str | None = None
    """The response cache's own Redis (another instance, or at least another database);
    `redis_url` when unset. Cache entries must never evict budgets: docs/limits.md, "Redis
    settings"."""
    redis_password: str | None = field(default=None, repr=False)
    """Redis AUTH password (overrides one in the URL). Injected sidecars get it from the
    namespace's `llmgate-credentials` Secret through `LLMGATE_REDIS_PASSWORD` (valueFrom)."""
    fail_mode: str = "failOpen"
    """When Redis fails: failOpen (serve with per-pod limits) or failClosed (503)."""
    virtual_key: str | None = None
    """Name of the pod-bound VirtualKey: keyless requests from localhost get its policy."""
    log_level: str = "info"
    """debug, info, warning or error."""
    max_body_bytes: int = 16 * 1024 * 1024
    """Largest accepted request body (413 above)."""
    reload_interval: float = 1.0
    """Seconds between checks of the config volumes."""
    shutdown_grace: float = 25.0
    """Seconds in-flight requests get to finish after SIGTERM."""
    client_header_timeout: float = 30.0
    """Seconds a client has to send a request's headers (slow or trickled headers: closed)."""
    client_idle_timeout: float = 75.0
    """Seconds an idle keep-alive connection stays open between two requests."""
    client_body_timeout: float = 30.0
    """Seconds a client has to send a request's whole body once its headers are in (408)."""
    request_timeout: float = _UPSTREAM.request
    """Whole-request deadline of routes that set no `timeout` (every attempt and chunk)."""
    upstream_first_byte_timeout: float = _UPSTREAM.first_byte
    """Wait for an upstream's response headers when the target sets no `timeout`."""
    upstream_idle_timeout: float = _UPSTREAM.idle
    """Longest silence of an upstream stream when the target sets no `timeout`."""
    upstream_max_body_bytes: int = _UPSTREAM.body_bytes
    """Largest non-streamed upstream answer, decompressed (502 above)."""
    upstream_max_error_bytes: int = _UPSTREAM.error_bytes
    """Bytes of an upstream error answer read to classify it (the rest is dropped)."""
    upstream_max_event_bytes: int = _UPSTREAM.event_bytes
    """Largest upstream stream line or event (the stream ends with an in-band error)."""

    def upstream_bounds(self) -> Bounds:
        return Bounds(body_bytes=self.upstream_max_body_bytes,
                      error_bytes=self.upstream_max_error_bytes,
                      event_bytes=self.upstream_max_event_bytes,
                      first_byte=self.upstream_first_byte_timeout,
                      idle=self.upstream_idle_timeout, request=self.request_timeout)


def add_arguments(parser: argparse.ArgumentParser, *, defaults: SidecarSettings) -> None:
    """Flags for every setting, defaulting to `LLMGATE_<NAME>` or the dataclass default."""
    for f in fields(SidecarSettings):
        flag = "--" + f.name.replace("_", "-")
        env = os.environ.get("LLMGATE_" + f.name.upper())
        default = getattr(defaults, f.name)
        kind = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)
        parser.add_argument(flag, dest=f.name, type=kind,
                            default=kind(env) if env not in (None, "") else default,
                            help=(f"env LLMGATE_{f.name.upper()}; default: %(default)s"))


def from_args(namespace: argparse.Namespace) -> SidecarSettings:
    values = {f.name: getattr(namespace, f.name) for f in fields(SidecarSettings)
              if hasattr(namespace, f.name)}
    return SidecarSettings(**values)
