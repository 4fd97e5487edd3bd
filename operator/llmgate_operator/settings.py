"""Settings of `llmgate operator`: one frozen dataclass, its flags and their env vars.

`llmgate_cli` calls `add_arguments(parser)` and `from_args(ns)`; `main.run` takes the result.
Every flag has an env var (`LLMGATE_*`) as its default, read once here and nowhere else.
No Kubernetes, no kopf, no I/O beyond reading the environment.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

DEFAULT_WEBHOOK_PORT = 9443
DEFAULT_OPS_PORT = 9464
DEFAULT_WEBHOOK_SERVICE = "llmgate-webhook"
DEFAULT_WEBHOOK_CONFIG_NAME = "llmgate-sidecar-injector"
DEFAULT_TLS_SECRET = "llmgate-webhook-tls"
DEFAULT_SIDECAR_IMAGE = "ghcr.io/llmgate/llmgate-sidecar:0.1.0"
DEFAULT_RESYNC_SECONDS = 60.0
DEFAULT_SPEND_SECONDS = 30.0
DEFAULT_NAMESPACE_ROLE = "llmgate-namespace"


@dataclass(frozen=True)
class OperatorSettings:
    """Everything `llmgate operator` can be told; immutable once parsed."""

    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means every namespace (cluster-wide)."""

    sidecar_image: str = DEFAULT_SIDECAR_IMAGE
    """Image of the sidecar container the webhook injects."""

    sidecar_redis_url: str | None = None
    """Redis URL handed to injected sidecars (`LLMGATE_REDIS_URL`); None: in-memory per pod."""

    sidecar_cache_redis_url: str | None = None
    """The response cache's Redis for injected sidecars (`LLMGATE_CACHE_REDIS_URL`); None:
    the cache shares `sidecar_redis_url`."""

    sidecar_resources: Mapping[str, Any] | None = None
    """A k8s ResourceRequirements for injected sidecars (pod annotations override requests)."""

    webhook_host: str = "0.0.0.0"
    """Address the admission webhook's HTTPS server binds."""

    webhook_port: int = DEFAULT_WEBHOOK_PORT
    """Port of the admission webhook's HTTPS server (the Service maps 443 to it)."""

    webhook_service: str = DEFAULT_WEBHOOK_SERVICE
    """Service in front of the webhook; its DNS names go into the certificate."""

    webhook_namespace: str | None = None
    """Namespace of that Service (and of the TLS Secret); defaults to POD_NAMESPACE."""

    webhook_url: str | None = None
    """URL the API server calls instead of the Service (the MWC's `clientConfig.url`); its
    host is added to the certificate the operator issues."""

    webhook_config_name: str = DEFAULT_WEBHOOK_CONFIG_NAME
    """MutatingWebhookConfiguration whose `caBundle`s the operator keeps current."""

    tls_secret: str = DEFAULT_TLS_SECRET
    """Secret (in `webhook_namespace`) where the operator keeps the webhook certificate."""

    tls_dir: str | None = None
    """Directory with `tls.crt`/`tls.key` (e.g. cert-manager); then certs are not managed."""

    webhook_enabled: bool = True
    """False (`--no-webhook`): run only the reconciler, no admission server."""

    ops_host: str = "0.0.0.0"
    """Address of the ops HTTP server (`/healthz`, `/readyz`, `/metrics`); the chart binds the
    pod IP (kubelet probes and Prometheus reach it there, nothing on other interfaces)."""

    ops_port: int = DEFAULT_OPS_PORT
    """Port of the ops HTTP server."""

    redis_url: str | None = None
    """Redis the operator reads spend from for VirtualKey status (optional)."""

    redis_password: str | None = field(default=None, repr=False)
    """AUTH password of that Redis and of the sidecars' (env `LLMGATE_REDIS_PASSWORD` only,
    never a flag: the chart sets it from a Secret). The operator copies it into each
    namespace's `llmgate-credentials` Secret, where injected sidecars read it."""

    log_level: str = "INFO"
    """Python logging level name."""

    resync_seconds: float = DEFAULT_RESYNC_SECONDS
    """How often every namespace is re-reconciled (key expiry, rotation grace periods)."""

    spend_seconds: float = DEFAULT_SPEND_SECONDS
    """How often VirtualKey spend is read from `redis_url` into their status."""

    peering: str | None = None
    """kopf peering object for more than one replica (leader election); None: standalone."""

    namespace_role: str = DEFAULT_NAMESPACE_ROLE
    """ClusterRole a namespace binds (RoleBinding) to let the operator manage its Secrets and
    ConfigMaps; named in the `AccessDenied` condition of CRs in namespaces that did not."""

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _env_bool(name: str) -> bool:
    return (_env(name) or "").strip().lower() in ("1", "true", "yes", "on")


def _env_namespaces() -> list[str]:
    raw = _env("LLMGATE_WATCH_NAMESPACES") or ""
    return [ns.strip() for ns in raw.split(",") if ns.strip()]


def parse_resources(text: str | None) -> dict[str, Any] | None:
    """Parse `--sidecar-resources` JSON; raise ValueError with a useful message otherwise."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--sidecar-resources is not JSON: {exc}") from None
    if not isinstance(value, dict) or not set(value) <= {"requests", "limits", "claims"}:
        raise ValueError("--sidecar-resources must be a ResourceRequirements object "
                         "(keys: requests, limits)")
    return value


def _webhook_url(text: str | None) -> str | None:
    if not text:
        return None
    parsed = urlsplit(text)
    if parsed.scheme != "https" or not parsed.hostname:
        raise ValueError(f"--webhook-url must be an https URL with a host, not {text!r}")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the operator's flags (defaults from the environment) to `parser`."""
    add = parser.add_argument
    add("--namespace", dest="namespaces", action="append", default=None, metavar="NS",
        help="namespace to watch (repeatable; env LLMGATE_WATCH_NAMESPACES, comma-separated; "
             "default: all namespaces)")
    add("--sidecar-image", default=_env("LLMGATE_SIDECAR_IMAGE", DEFAULT_SIDECAR_IMAGE),
        help="image of the injected sidecar")
    add("--sidecar-redis-url", default=_env("LLMGATE_SIDECAR_REDIS_URL"),
        help="Redis URL passed to injected sidecars")
    add("--sidecar-cache-redis-url", default=_env("LLMGATE_SIDECAR_CACHE_REDIS_URL"),
        help="Redis URL of the response cache passed to injected sidecars (default: the "
             "sidecar Redis URL)")
    add("--sidecar-resources", default=_env("LLMGATE_SIDECAR_RESOURCES"),
        help="JSON ResourceRequirements of injected sidecars")
    add("--webhook-host", default=_env("LLMGATE_WEBHOOK_HOST", "0.0.0.0"),
        help="address the admission webhook binds")
    add("--webhook-port", type=int,
        default=int(_env("LLMGATE_WEBHOOK_PORT", str(DEFAULT_WEBHOOK_PORT)) or 0),
        help="port of the admission webhook (HTTPS)")
    add("--webhook-service", default=_env("LLMGATE_WEBHOOK_SERVICE", DEFAULT_WEBHOOK_SERVICE),
        help="Service name in front of the webhook")
    add("--webhook-namespace", default=_env("LLMGATE_WEBHOOK_NAMESPACE", _env("POD_NAMESPACE")),
        help="namespace of the webhook Service and TLS Secret (default: $POD_NAMESPACE)")
    add("--webhook-url", default=_env("LLMGATE_WEBHOOK_URL"),
        help="https URL the API server calls the webhook at, when not through the Service "
             "(its host goes into the issued certificate)")
    add("--webhook-config-name",
        default=_env("LLMGATE_WEBHOOK_CONFIG_NAME", DEFAULT_WEBHOOK_CONFIG_NAME),
        help="MutatingWebhookConfiguration whose caBundle the operator manages")
    add("--tls-secret", default=_env("LLMGATE_TLS_SECRET", DEFAULT_TLS_SECRET),
        help="Secret holding the webhook certificate")
    add("--tls-dir", default=_env("LLMGATE_TLS_DIR"),
        help="directory with tls.crt/tls.key (e.g. cert-manager); certificates not managed")
    add("--no-webhook", action="store_true", default=_env_bool("LLMGATE_NO_WEBHOOK"),
        help="do not run the admission webhook")
    add("--ops-host", default=_env("LLMGATE_OPS_HOST", "0.0.0.0"),
        help="address /healthz, /readyz and /metrics bind (e.g. the pod IP or 127.0.0.1)")
    add("--ops-port", type=int,
        default=int(_env("LLMGATE_OPS_PORT", str(DEFAULT_OPS_PORT)) or 0),
        help="port of /healthz, /readyz and /metrics")
    add("--redis-url", default=_env("LLMGATE_REDIS_URL"),
        help="Redis for VirtualKey spend status (optional): redis://, rediss://, "
             "redis+cluster://, redis+sentinel:// (docs/limits.md)")
    add("--resync-seconds", type=float,
        default=float(_env("LLMGATE_RESYNC_SECONDS", str(DEFAULT_RESYNC_SECONDS)) or 0),
        help="how often every namespace is re-reconciled")
    add("--spend-seconds", type=float,
        default=float(_env("LLMGATE_SPEND_SECONDS", str(DEFAULT_SPEND_SECONDS)) or 0),
        help="how often VirtualKey spend is read from --redis-url into their status")
    add("--peering", default=_env("LLMGATE_PEERING"),
        help="kopf peering name for several replicas (needs the peering CRD); default: "
             "standalone")
    add("--namespace-role", default=_env("LLMGATE_NAMESPACE_ROLE", DEFAULT_NAMESPACE_ROLE),
        help="ClusterRole namespaces bind to grant the operator their Secrets (named in "
             "AccessDenied conditions)")
    add("--log-level", default=_env("LLMGATE_LOG_LEVEL", "INFO"),
        help="logging level (DEBUG, INFO, WARNING, ERROR)")


def from_args(ns: argparse.Namespace) -> OperatorSettings:
    """Build settings from parsed flags (raises ValueError on an invalid value)."""
    namespaces = ns.namespaces if ns.namespaces else _env_namespaces()
    return OperatorSettings(
        namespaces=tuple(dict.fromkeys(namespaces)),
        sidecar_image=ns.sidecar_image,
        sidecar_redis_url=ns.sidecar_redis_url or None,
        sidecar_cache_redis_url=ns.sidecar_cache_redis_url or None,
        sidecar_resources=parse_resources(ns.sidecar_resources),
        webhook_host=ns.webhook_host,
        webhook_port=ns.webhook_port,
        webhook_service=ns.webhook_service,
        webhook_namespace=ns.webhook_namespace or None,
        webhook_url=_webhook_url(ns.webhook_url),
        webhook_config_name=ns.webhook_config_name,
        tls_secret=ns.tls_secret,
        tls_dir=ns.tls_dir or None,
        webhook_enabled=not ns.no_webhook,
        ops_host=ns.ops_host,
        ops_port=ns.ops_port,
        redis_url=ns.redis_url or None,
        redis_password=_env("LLMGATE_REDIS_PASSWORD"),
        log_level=str(ns.log_level).upper(),
        resync_seconds=max(1.0, float(ns.resync_seconds)),
        spend_seconds=max(1.0, float(ns.spend_seconds)),
        peering=ns.peering or None,
        namespace_role=ns.namespace_role,
    )
