"""The ONE description of the injected llmgate sidecar: container, volumes and app env.

Pure: pod dicts and `SidecarOptions` in, plain Kubernetes dicts out. Called by `webhook`
(which turns the result into a JSON patch) and by anything else that must describe the
sidecar. No Kubernetes client, no I/O; invalid pod annotations become warnings, not errors.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from llmgate_contract import (
    CONFIGMAP_NAME,
    CREDENTIALS_SECRET_NAME,
    POD_BOUND_KEY,
    REDIS_PASSWORD_KEY,
)

SIDECAR_NAME = "llmgate-sidecar"
INJECT_LABEL = "llmgate.io/inject"
VIRTUAL_KEY_ANNOTATION = "llmgate.io/virtual-key"
CPU_ANNOTATION = "llmgate.io/sidecar-cpu"
MEMORY_ANNOTATION = "llmgate.io/sidecar-memory"
NATIVE_ANNOTATION = "llmgate.io/native-sidecar"

CONFIG_VOLUME = "llmgate-config"
CREDENTIALS_VOLUME = "llmgate-credentials"
CONFIG_DIR = "/etc/llmgate/config"
CREDENTIALS_DIR = "/etc/llmgate/credentials"
OPS_PORT_NAME = "llmgate-ops"
RUN_AS_USER = 65532

DEFAULT_RESOURCES: Mapping[str, Mapping[str, str]] = {
    "requests": {"cpu": "50m", "memory": "80Mi"},
    "limits": {"memory": "256Mi"},
}

# Kubernetes resource.Quantity, non-negative: digits, optional fraction, optional suffix.
_QUANTITY = re.compile(
    r"(?P<num>[0-9]+(\.[0-9]*)?|\.[0-9]+)(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]{1,3})?")
_SUFFIX_FACTORS: Mapping[str, Decimal] = {
    "": Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
    "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40),
    "Pi": Decimal(2**50), "Ei": Decimal(2**60),
}


@dataclass(frozen=True)
class SidecarOptions:
    """How the operator was told to build sidecars (operator flags / chart values)."""

    image: str
    """The sidecar image reference, e.g. `ghcr.io/llmgate/sidecar:0.1.0`."""
    redis_url: str | None = None
    """Passed to the sidecar as `LLMGATE_REDIS_URL`; None = in-memory state per pod."""
    cache_redis_url: str | None = None
    """Passed to the sidecar as `LLMGATE_CACHE_REDIS_URL` (the response cache's own Redis);
    None = the cache shares `redis_url`."""
    redis_auth: bool = False
    """Redis needs a password: `LLMGATE_REDIS_PASSWORD` from the namespace's credentials
    Secret (valueFrom; never a literal in the pod spec or the ConfigMap)."""
    resources: dict[str, Any] | None = None
    """A k8s ResourceRequirements replacing `DEFAULT_RESOURCES` wholesale; None = defaults."""
    native: bool = True
    """Native sidecar (init container, restartPolicy Always, k8s >= 1.29) or a container."""
    port: int = 4000
    """The pod-local API port (app containers get base URLs pointing at it)."""
    ops_port: int = 9464
    """`/healthz`, `/readyz`, `/metrics`; probed by the kubelet, scraped by Prometheus."""
    pull_policy: str = "IfNotPresent"


@dataclass(frozen=True)
class Sidecar:
    """What to add to one pod: the container, where it goes, and the volumes it needs."""

    container: dict[str, Any]
    native: bool
    """True: first of `spec.initContainers`; False: appended to `spec.containers`."""
    volumes: list[dict[str, Any]]
    """Only volumes the pod does not already have (an identical existing one is reused)."""
    warnings: list[str] = field(default_factory=list)
    bound_key: str | None = None
    """The VirtualKey the pod is bound to by annotation, if any."""


def is_injected(pod: Mapping[str, Any]) -> bool:
    """True when the pod already carries the sidecar (as a container or init container)."""
    spec = _mapping(pod.get("spec"))
    for key in ("initContainers", "containers"):
        for container in _list(spec.get(key)):
            if isinstance(container, Mapping) and container.get("name") == SIDECAR_NAME:
                return True
    return False


def build(pod: Mapping[str, Any], options: SidecarOptions) -> Sidecar:
    """Describe the sidecar for `pod`, honouring its annotations and avoiding name clashes."""
    annotations = _annotations(pod)
    warnings: list[str] = []
    native = options.native and _annotation_bool(annotations, NATIVE_ANNOTATION, warnings)
    existing = {
        v.get("name"): v
        for v in _list(_mapping(pod.get("spec")).get("volumes"))
        if isinstance(v, Mapping)
    }
    config_volume = {"name": CONFIG_VOLUME,
                     "configMap": {"name": CONFIGMAP_NAME, "optional": True}}
    credentials_volume = {"name": CREDENTIALS_VOLUME,
                          "secret": {"secretName": CREDENTIALS_SECRET_NAME, "optional": True}}
    volumes: list[dict[str, Any]] = []
    names: list[str] = []
    for wanted in (config_volume, credentials_volume):
        name, reuse = _volume_name(wanted, existing)
        names.append(name)
        if not reuse:
            volumes.append({**wanted, "name": name})
            existing[name] = volumes[-1]
    resources = sidecar_resources(options, annotations, warnings)
    bound_key = _virtual_key(annotations, warnings)
    container = sidecar_container(
        options, resources=resources, native=native, virtual_key=bound_key,
        config_volume=names[0], credentials_volume=names[1])
    return Sidecar(container=container, native=native, volumes=volumes, warnings=warnings,
                   bound_key=bound_key)


def sidecar_container(
    options: SidecarOptions,
    *,
    resources: Mapping[str, Any] | None = None,
    native: bool = True,
    virtual_key: str | None = None,
    config_volume: str = CONFIG_VOLUME,
    credentials_volume: str = CREDENTIALS_VOLUME,
) -> dict[str, Any]:
    """The sidecar container spec (native: with `restartPolicy: Always`)."""
    probe_target = {"port": OPS_PORT_NAME, "scheme": "HTTP"}
    container: dict[str, Any] = {
        "name": SIDECAR_NAME,
        "image": options.image,
        "imagePullPolicy": options.pull_policy,
        "args": ["sidecar"],
        "env": _sidecar_env(options, virtual_key),
        "ports": [{"name": OPS_PORT_NAME, "containerPort": options.ops_port, "protocol": "TCP"}],
        # Native sidecars gate later init containers and the app on the startup probe, so
        # the app's first request finds a listening gateway with a loaded config.
        "startupProbe": {"httpGet": {"path": "/readyz", **probe_target},
                         "periodSeconds": 1, "timeoutSeconds": 2, "failureThreshold": 120},
        "readinessProbe": {"httpGet": {"path": "/readyz", **probe_target},
                           "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 2},
        "livenessProbe": {"httpGet": {"path": "/healthz", **probe_target},
                          "periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 3},
        "resources": copy.deepcopy(dict(resources if resources is not None
                                        else DEFAULT_RESOURCES)),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # Whole-directory mounts (never subPath): kubelet updates them in place on change.
        "volumeMounts": [
            {"name": config_volume, "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": credentials_volume, "mountPath": CREDENTIALS_DIR, "readOnly": True},
        ],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if native:
        container["restartPolicy"] = "Always"
    return container


def app_env(options: SidecarOptions, *, bound: bool = False) -> list[dict[str, str]]:
    """The base URLs every app container gets unless it sets them itself; in a pod bound to
    a VirtualKey also a placeholder API key, because the SDKs refuse to start without one."""
    env = [
        {"name": "OPENAI_BASE_URL", "value": f"http://127.0.0.1:{options.port}/v1"},
        {"name": "ANTHROPIC_BASE_URL", "value": f"http://127.0.0.1:{options.port}"},
    ]
    if bound:
        env += [{"name": "OPENAI_API_KEY", "value": POD_BOUND_KEY},
                {"name": "ANTHROPIC_API_KEY", "value": POD_BOUND_KEY}]
    return env


def missing_app_env(container: Mapping[str, Any], options: SidecarOptions, *,
                    bound: bool = False) -> list[dict[str, str]]:
    """The `app_env` entries `container` does not already define in its `env`."""
    defined = {e.get("name") for e in _list(container.get("env")) if isinstance(e, Mapping)}
    return [entry for entry in app_env(options, bound=bound) if entry["name"] not in defined]


def sidecar_resources(
    options: SidecarOptions, annotations: Mapping[str, str], warnings: list[str]
) -> dict[str, Any]:
    """Defaults, replaced by `options.resources`, then requests from the pod annotations."""
    # `{}` is a deliberate "no requests, no limits" (as in chart values), not "defaults".
    chosen = options.resources if options.resources is not None else DEFAULT_RESOURCES
    resources = copy.deepcopy(dict(chosen))
    requests = dict(resources.get("requests") or {})
    limits = dict(resources.get("limits") or {})
    for annotation, resource in ((CPU_ANNOTATION, "cpu"), (MEMORY_ANNOTATION, "memory")):
        value = annotations.get(annotation)
        if value is None:
            continue
        value = str(value).strip()
        if parse_quantity(value) is None:
            warnings.append(f"llmgate: ignoring annotation {annotation}={value!r}: "
                            "not a Kubernetes quantity (e.g. 100m, 128Mi)")
            continue
        requests[resource] = value
        limit = limits.get(resource)
        limit_value = parse_quantity(str(limit)) if limit is not None else None
        # The API server rejects a request above its limit: that would block the pod.
        if limit_value is not None and _quantity(value) > limit_value:
            limits[resource] = value
            warnings.append(f"llmgate: raised the sidecar's {resource} limit to {value} "
                            f"to match annotation {annotation}")
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return resources


def parse_quantity(text: str) -> Decimal | None:
    """A non-negative Kubernetes quantity ('100m', '1.5Gi', '1e3') as a Decimal, or None."""
    match = _QUANTITY.fullmatch(text)
    if match is None:
        return None
    suffix = match.group("suffix") or ""
    number = Decimal(match.group("num"))
    if len(suffix) > 1 and suffix[0] in "eE":       # '1E' alone is exa, '1E3' an exponent
        return number.scaleb(int(suffix[1:]))
    return number * _SUFFIX_FACTORS[suffix]


def _quantity(text: str) -> Decimal:
    value = parse_quantity(text)
    if value is None:
        raise ValueError(f"invalid quantity {text!r}")
    return value


def _sidecar_env(options: SidecarOptions, virtual_key: str | None) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "LLMGATE_CONFIG_DIR", "value": CONFIG_DIR},
        {"name": "LLMGATE_CREDENTIALS_DIR", "value": CREDENTIALS_DIR},
        {"name": "LLMGATE_PORT", "value": str(options.port)},
        {"name": "LLMGATE_OPS_PORT", "value": str(options.ops_port)},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    if virtual_key:
        env.append({"name": "LLMGATE_VIRTUAL_KEY", "value": virtual_key})
    if options.redis_url:
        env.append({"name": "LLMGATE_REDIS_URL", "value": options.redis_url})
    if options.cache_redis_url:
        env.append({"name": "LLMGATE_CACHE_REDIS_URL", "value": options.cache_redis_url})
    if options.redis_auth and (options.redis_url or options.cache_redis_url):
        env.append({"name": "LLMGATE_REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {
            "name": CREDENTIALS_SECRET_NAME, "key": REDIS_PASSWORD_KEY, "optional": True}}})
    return env


def _volume_name(
    wanted: Mapping[str, Any], existing: Mapping[Any, Any]
) -> tuple[str, bool]:
    """(name to use, True if an identical volume already exists and is reused)."""
    base = str(wanted["name"])
    candidate, n = base, 1
    while candidate in existing:
        if _same_source(existing[candidate], wanted):
            return candidate, True
        n += 1
        candidate = f"{base}-{n}"
    return candidate, False


def _same_source(existing: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Reusable: the same ConfigMap/Secret, whole (`items` would hide the other files)."""
    kind, key = ("configMap", "name") if "configMap" in wanted else ("secret", "secretName")
    source = _mapping(existing.get(kind))
    return bool(source) and source.get(key) == wanted[kind][key] and "items" not in source


def _virtual_key(annotations: Mapping[str, str], warnings: list[str]) -> str | None:
    value = annotations.get(VIRTUAL_KEY_ANNOTATION)
    if value is None or not str(value).strip():
        return None
    value = str(value).strip()
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", value) or len(value) > 253:
        warnings.append(f"llmgate: ignoring annotation {VIRTUAL_KEY_ANNOTATION}={value!r}: "
                        "not a VirtualKey name")
        return None
    return value


def _annotation_bool(annotations: Mapping[str, str], key: str, warnings: list[str]) -> bool:
    value = annotations.get(key)
    if value is None:
        return True
    text = str(value).strip().lower()
    if text in ("false", "0", "no", "off"):
        return False
    if text not in ("true", "1", "yes", "on"):
        warnings.append(f"llmgate: ignoring annotation {key}={value!r}: use \"true\" or \"false\"")
    return True


def _annotations(pod: Mapping[str, Any]) -> dict[str, str]:
    annotations = _mapping(_mapping(pod.get("metadata")).get("annotations"))
    return {str(k): str(v) for k, v in annotations.items()}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
