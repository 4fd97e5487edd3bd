"""Which sidecar versions run where: the facts an upgrade is finished by (docs/upgrade.md).

`handlers` indexes every pod that carries the llmgate sidecar by the sidecar's image;
`reconcile.Reconciler.sidecars` turns a namespace's images into an Event and an annotation on
its `llmgate-config`, and the operator's metrics count pods by version. Pure: pod dicts in,
strings out; no Kubernetes client.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmgate_operator.injection import SIDECAR_NAME

VERSIONS_ANNOTATION = "llmgate.io/sidecar-versions"
"""On `llmgate-config`: the sidecar versions running in the namespace, e.g. `0.1.0,0.2.0`."""


def sidecar_image(pod: Mapping[str, Any]) -> str | None:
    """The image of the pod's llmgate sidecar (native or a plain container), if it has one."""
    spec = pod.get("spec")
    if not isinstance(spec, Mapping):
        return None
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            if isinstance(container, Mapping) and container.get("name") == SIDECAR_NAME:
                image = container.get("image")
                return str(image) if image else None
    return None


def image_version(image: str) -> str:
    """The version part of an image reference: its tag, a short digest, or `latest`."""
    name, _, digest = image.partition("@")
    if digest:
        algorithm, _, value = digest.partition(":")
        return f"{algorithm}:{value[:12]}" if value else digest
    last = name.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else "latest"


def versions(images: Mapping[str, int]) -> dict[str, int]:
    """Pod counts by sidecar version."""
    out: dict[str, int] = {}
    for image, count in images.items():
        version = image_version(image)
        out[version] = out.get(version, 0) + count
    return dict(sorted(out.items()))


def describe(counts: Mapping[str, int], injected: str | None) -> tuple[bool, str]:
    """(whether the namespace runs only what new pods get, a message for people)."""
    current = image_version(injected) if injected else None
    running = ", ".join(f"{version} ({count} pods)" for version, count in counts.items())
    if current is None:
        return len(counts) <= 1, f"llmgate sidecars running: {running or 'none'}"
    behind = sum(count for version, count in counts.items() if version != current)
    if not behind:
        return True, f"llmgate sidecars running: {running or 'none'} (all at {current})"
    return False, (f"llmgate sidecars running: {running}; new pods get {current}: {behind} "
                   f"pod(s) still to roll (docs/upgrade.md)")
