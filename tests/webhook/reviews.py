"""Builders shared by the webhook tests: AdmissionReviews around pods, and patch application.

Kept free of assertions about behaviour: tests say what they expect; this only shapes input
and applies the webhook's answer the way the API server would (RFC 6902 via `jsonpatch`).
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import jsonpatch
import kubernetes_validate
from llmgate_operator.injection import SidecarOptions

IMAGE = "ghcr.io/llmgate/sidecar:0.1.0"
OPTIONS = SidecarOptions(image=IMAGE)


def pod(*containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """A Deployment-style pod (generateName only, opted in by label)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "web-7d9c-", "namespace": "apps",
                     "labels": {"app": "web", "llmgate.io/inject": "true"}},
        "spec": {"containers": list(containers) or [{"name": "app", "image": "python:3.12"}],
                 **spec},
    }


def admission_review(
    obj: Any, *, namespace: str | None = "apps", operation: str = "CREATE",
    uid: str = "8e1f0a3c-1111-4b5e-9c1e-0123456789ab", kind: str = "Pod",
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "uid": uid,
        "kind": {"group": "", "version": "v1", "kind": kind},
        "resource": {"group": "", "version": "v1", "resource": kind.lower() + "s"},
        "requestKind": {"group": "", "version": "v1", "kind": kind},
        "operation": operation,
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
        "object": obj,
        "oldObject": None,
        "dryRun": False,
    }
    if namespace is not None:
        request["namespace"] = namespace
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def patch_ops(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The decoded JSON patch of an AdmissionReview answer ([] when it carries none)."""
    response = answer["response"]
    if "patch" not in response:
        return []
    assert response["patchType"] == "JSONPatch"
    ops: list[dict[str, Any]] = json.loads(base64.b64decode(response["patch"]))
    return ops


def apply(answer: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` after the API server applied the answer's patch (obj itself is not modified)."""
    patched: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(obj), patch_ops(answer))
    return patched


def validate_pod(obj: dict[str, Any]) -> None:
    """Raise unless `obj` is a valid v1 Pod for Kubernetes 1.30 (unknown fields rejected)."""
    kubernetes_validate.validate(obj, "1.30.0", strict=True)


def sidecar_of(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj["spec"]
    found = [c for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])
             if c["name"] == "llmgate-sidecar"]
    assert len(found) == 1, f"expected exactly one sidecar, got {len(found)}"
    sidecar: dict[str, Any] = found[0]
    return sidecar


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}
