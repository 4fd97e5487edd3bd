"""Admission review for pods: decides whether to inject and turns `injection` into a JSON patch.

Pure: an `admission.k8s.io/v1` AdmissionReview dict in, the response AdmissionReview out.
Called by `webhook_server` (over HTTPS) and by tests. It must never block a pod: every
answer is `allowed: true`; problems become `warnings` and an `error`/`skipped` outcome.
Which pods reach it (the label/namespace opt-in) is the MutatingWebhookConfiguration's job.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from llmgate_operator import injection
from llmgate_operator.injection import SidecarOptions

Result = Literal["injected", "skipped", "error"]
PROTECTED_NAMESPACES = frozenset({"kube-system"})
_MAX_WARNING = 250
_REVIEW_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
_BLOCKING_PORTS_WARNING = ("llmgate: container {name!r} declares port {port}, which the "
                           "sidecar also listens on; one of them will fail to bind")


class MalformedReview(ValueError):
    """The request body is not an AdmissionReview we can answer."""


@dataclass(frozen=True)
class Decision:
    """The response to send plus what happened, for metrics and logs."""

    response: dict[str, Any]
    result: Result
    reason: str
    warnings: list[str] = field(default_factory=list)


def review(admission_review: Any, options: SidecarOptions) -> dict[str, Any]:
    """Answer one AdmissionReview (see `decide`)."""
    return decide(admission_review, options).response


def decide(admission_review: Any, options: SidecarOptions) -> Decision:
    """Decide on one AdmissionReview. Never raises; a malformed review gets an error answer."""
    try:
        api_version, request = _parse(admission_review)
    except MalformedReview as exc:
        uid = _uid_of(admission_review)
        return Decision(error_response(str(exc), uid=uid), "error", str(exc))
    uid = str(request["uid"])
    try:
        result, reason, ops, warnings = _decide_pod(request, options)
    except Exception as exc:
        # A pod shape nobody foresaw (or a bug here): admit it untouched rather than block it.
        reason = f"llmgate: sidecar not injected: cannot read the pod ({exc!r})"
        return Decision(_response(api_version, uid, None, [reason]), "error", reason, [reason])
    return Decision(_response(api_version, uid, ops, warnings), result, reason, warnings)


def error_response(message: str, *, uid: str = "") -> dict[str, Any]:
    """An AdmissionReview answering a request we could not read (still allowed)."""
    response = _response(_REVIEW_VERSIONS[0], uid, None, [f"llmgate: {message}"])
    response["response"]["status"] = {"code": 400, "message": message}
    return response


def patch_for(pod: Mapping[str, Any], options: SidecarOptions) -> tuple[list[dict[str, Any]],
                                                                         list[str]]:
    """The JSON patch (RFC 6902) that injects the sidecar into `pod`, plus warnings.

    Every op `add`s a whole array (`add` creates an absent member and replaces a present
    one), so paths are valid whatever the pod lacks, and re-applying the patch to the
    patched pod changes nothing.
    """
    sidecar = injection.build(pod, options)
    spec = _mapping(pod.get("spec"))
    warnings = list(sidecar.warnings)
    containers: list[Any] = []
    for index, container in enumerate(_array(spec, "containers")):
        if not isinstance(container, Mapping):
            raise ValueError(f"spec.containers[{index}] is not an object")
        containers.append(_with_app_env(container, options, bound=sidecar.bound_key is not None))
        warnings.extend(_port_clashes(container, options))
    init_containers = list(_array(spec, "initContainers"))
    if sidecar.native:
        # First, so it is up before the pod's other init containers and the app.
        init_containers.insert(0, sidecar.container)
    else:
        containers.append(sidecar.container)
        if spec.get("restartPolicy") in ("Never", "OnFailure"):
            warnings.append("llmgate: the sidecar runs as a regular container, so this pod "
                            f"(restartPolicy {spec['restartPolicy']}) will not complete on its "
                            "own; use native sidecars (Kubernetes >= 1.29)")
    changes = {
        key: value
        for key, value in (("initContainers", init_containers), ("containers", containers),
                           ("volumes", [*_array(spec, "volumes"), *sidecar.volumes]))
        if (value or spec.get(key)) and value != spec.get(key)
    }
    if not isinstance(pod.get("spec"), Mapping):
        return [{"op": "add", "path": "/spec", "value": changes}], warnings
    return [{"op": "add", "path": f"/spec/{key}", "value": value}
            for key, value in changes.items()], warnings


def pod_name(pod: Mapping[str, Any]) -> str:
    """A name for logs and warnings: the name, or `generateName*` for controller-made pods."""
    metadata = _mapping(pod.get("metadata"))
    if metadata.get("name"):
        return str(metadata["name"])
    if metadata.get("generateName"):
        return f"{metadata['generateName']}*"
    return "<unnamed>"


def _decide_pod(
    request: Mapping[str, Any], options: SidecarOptions
) -> tuple[Result, str, list[dict[str, Any]] | None, list[str]]:
    skip = _skip_reason(request)
    if skip is not None:
        reason, warn = skip
        return "skipped", reason, None, [f"llmgate: sidecar not injected: {reason}"] if warn else []
    pod = request["object"]
    ops, warnings = patch_for(pod, options)
    return "injected", f"injected into {pod_name(pod)}", ops, warnings


def _skip_reason(request: Mapping[str, Any]) -> tuple[str, bool] | None:
    """(why the pod is left alone, whether to tell the user) or None to inject."""
    kind = request.get("kind")
    resource = request.get("resource")
    is_pod = (isinstance(kind, Mapping) and kind.get("kind") == "Pod") or (
        isinstance(resource, Mapping) and resource.get("resource") == "pods")
    if not is_pod or request.get("subResource"):
        return "not a pod", False
    if request.get("operation", "CREATE") != "CREATE":
        return f"operation {request.get('operation')} (only CREATE is mutated)", False
    pod = request.get("object")
    if not isinstance(pod, Mapping):
        raise ValueError("request.object is not a pod object")
    metadata = _mapping(pod.get("metadata"))
    labels = _mapping(metadata.get("labels"))
    opted_in = labels.get(injection.INJECT_LABEL) == "true"
    namespace = request.get("namespace") or metadata.get("namespace") or ""
    spec = _mapping(pod.get("spec"))
    os_name = _mapping(spec.get("os")).get("name")
    if labels.get(injection.INJECT_LABEL) == "false":
        return f"label {injection.INJECT_LABEL}=false", False
    if namespace in PROTECTED_NAMESPACES:
        return f"namespace {namespace} is never injected", opted_in
    if spec.get("hostNetwork") is True:
        return "hostNetwork pods are never injected (the sidecar would bind the node's ports)", True
    if os_name == "windows":
        return "the sidecar image runs on Linux only", True
    if injection.is_injected(pod):
        return "the pod already has the sidecar", False
    return None


def _with_app_env(container: Mapping[str, Any], options: SidecarOptions, *,
                  bound: bool) -> dict[str, Any]:
    missing = injection.missing_app_env(container, options, bound=bound)
    if not missing:
        return dict(container)
    return {**container, "env": [*_array(container, "env"), *missing]}


def _array(parent: Mapping[str, Any], key: str) -> list[Any]:
    """`parent[key]` as a list; absent or null is empty; any other type is an error."""
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{key} is a {type(value).__name__}, not a list")
    return value


def _port_clashes(container: Mapping[str, Any], options: SidecarOptions) -> list[str]:
    ports = container.get("ports")
    taken = {p.get("containerPort") for p in (ports if isinstance(ports, list) else [])
             if isinstance(p, Mapping)}
    return [_BLOCKING_PORTS_WARNING.format(name=container.get("name"), port=port)
            for port in (options.port, options.ops_port) if port in taken]


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _parse(admission_review: Any) -> tuple[str, Mapping[str, Any]]:
    if not isinstance(admission_review, Mapping):
        raise MalformedReview("the body is not a JSON object")
    api_version = admission_review.get("apiVersion")
    if api_version not in _REVIEW_VERSIONS or admission_review.get("kind") != "AdmissionReview":
        raise MalformedReview(
            f"expected kind AdmissionReview, apiVersion admission.k8s.io/v1; got kind "
            f"{admission_review.get('kind')!r}, apiVersion {api_version!r}")
    request = admission_review.get("request")
    if not isinstance(request, Mapping):
        raise MalformedReview("the AdmissionReview has no request")
    if not isinstance(request.get("uid"), str) or not request["uid"]:
        raise MalformedReview("the AdmissionReview request has no uid")
    return str(api_version), request


def _uid_of(admission_review: Any) -> str:
    if isinstance(admission_review, Mapping):
        request = admission_review.get("request")
        if isinstance(request, Mapping) and isinstance(request.get("uid"), str):
            return str(request["uid"])
    return ""


def _response(
    api_version: str, uid: str, ops: list[dict[str, Any]] | None, warnings: list[str]
) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if ops:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(
            json.dumps(ops, separators=(",", ":")).encode()).decode()
    if warnings:
        # The API server may truncate longer warnings; keep the end readable ourselves.
        response["warnings"] = [w if len(w) <= _MAX_WARNING else w[:_MAX_WARNING - 3] + "..."
                                for w in warnings]
    return {"apiVersion": api_version, "kind": "AdmissionReview", "response": response}
