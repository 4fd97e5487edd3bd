"""What the cluster tests declare and read: namespaces, example CRs, conditions, workloads.

Shared by the operator, webhook, sidecar, GC and peering tests so each states only what
it checks. Helpers only; they wait (bounded) but assert nothing about the product.
"""

from __future__ import annotations

import base64
import re
import urllib.request
from pathlib import Path
from typing import Any

from llmgate_contract import (
    CONFIGMAP_NAME,
    CREDENTIALS_SECRET_NAME,
    Bundle,
    TornBundleError,
    read_bundle,
)
from llmgate_operator import api as crds

from tests.cluster.api import GRANT_PATIENCE, Api, eventually, load_docs, path
from tests.cluster.binaries import ROOT

EXAMPLES = ROOT / "examples"


GRANT_ROLE = "llmgate-namespace"  # the chart's ClusterRole a namespace binds (release llmgate)
# The operator's ServiceAccount (release llmgate in llmgate-system) as the authorizer sees it.
OPERATOR_USER = "system:serviceaccount:llmgate-system:llmgate"
OPERATOR_GROUPS = ["system:serviceaccounts", "system:serviceaccounts:llmgate-system",
                   "system:authenticated"]


def namespace(admin: Api, name: str, labels: dict[str, str] | None = None, *,
              grant: bool = True) -> str:
    """A namespace; `grant`: its admin lets the operator manage its Secrets and ConfigMaps
    (the RoleBinding of docs/install.md; without it its CRs say AccessDenied)."""
    admin.apply({"apiVersion": "v1", "kind": "Namespace",
                 "metadata": {"name": name, "labels": labels or {}}})
    if grant:
        grant_operator(admin, name)
    return name


def grant_operator(admin: Api, name: str) -> None:
    """Bind the chart's ClusterRole for the operator in namespace `name`, and return once
    the authorizer honours it (at most GRANT_PATIENCE): it reads bindings from an informer
    cache, so without the wait the operator's first requests or an access check made at
    once could still be refused (seen at load average 10)."""
    admin.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                 "metadata": {"name": "llmgate", "namespace": name},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                             "name": GRANT_ROLE},
                 "subjects": [{"kind": "ServiceAccount", "name": "llmgate",
                               "namespace": "llmgate-system"}]}, name)
    eventually(lambda: admin.allows(OPERATOR_USER, OPERATOR_GROUPS, "get", "secrets", name),
               what=f"RBAC to honour the operator's RoleBinding in {name}",
               timeout=GRANT_PATIENCE)


def example(name: str) -> list[dict[str, Any]]:
    return load_docs(EXAMPLES / name)


def is_cr(doc: dict[str, Any]) -> bool:
    return str(doc["apiVersion"]).startswith(crds.GROUP + "/")


def ready(admin: Api, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """The Ready condition as `kubectl wait --for=condition=Ready` reads it: present, and
    observed for the current generation (else the wait would still be waiting)."""
    body = admin.get(path(kind, namespace, name))
    if body is None:
        return None
    conditions = (body.get("status") or {}).get("conditions") or []
    found = next((c for c in conditions if c.get("type") == "Ready"), None)
    if found is None:
        return None
    if found.get("observedGeneration", body["metadata"]["generation"]) \
            != body["metadata"]["generation"]:
        return None
    return dict(found)


def wait_ready(admin: Api, docs: list[dict[str, Any]], namespace: str, *,
               timeout: float = 60) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> Ready condition of every CR in `docs`, once all have one."""
    crs = [(d["kind"], d["metadata"]["name"]) for d in docs if is_cr(d)]
    return dict(eventually(
        lambda: (found := {key: ready(admin, *key[:1], namespace, key[1]) for key in crs})
        and all(found.values()) and found,
        what=f"a Ready condition on every CR in {namespace}", timeout=timeout))


def decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def compiled(admin: Api, namespace: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(ConfigMap, Secret) the operator wrote into `namespace`, once both exist."""
    config = admin.get(path("ConfigMap", namespace, CONFIGMAP_NAME))
    credentials = admin.get(path("Secret", namespace, CREDENTIALS_SECRET_NAME))
    if config is None or credentials is None:
        return None
    return config, credentials


def bundle(admin: Api, namespace: str) -> Bundle | None:
    """What a sidecar would load from the namespace's two objects (None: absent, or caught
    mid-update: the sidecar would keep its last good config then)."""
    found = compiled(admin, namespace)
    if found is None:
        return None
    try:
        return read_bundle(found[0].get("data") or {}, decoded(found[1]))
    except TornBundleError:
        return None


def virtual_key(admin: Api, namespace: str, name: str) -> str:
    secret = eventually(lambda: admin.get(path("Secret", namespace, f"{name}-llmgate-key")),
                        what=f"the key Secret of VirtualKey {name}")
    return decoded(secret)["api-key"]


def deployment(name: str, labels: dict[str, str], *, annotations: dict[str, str] | None = None,
               replicas: int = 1) -> dict[str, Any]:
    """An app Deployment whose pods are labelled `labels` (no container ever runs it)."""
    selector = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {
            "replicas": replicas, "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": selector | labels, "annotations": annotations or {}},
                "spec": {"containers": [{"name": "app", "image": "registry.example/app:1",
                                         "command": ["sleep", "infinity"]}]}},
        },
    }


def pod(name: str, labels: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}],
                     **spec}}


def pods_of(admin: Api, namespace: str, app: str) -> list[dict[str, Any]]:
    return admin.items("Pod", namespace, labelSelector=f"app={app}")


def metric(port: int, name: str, labels: str = "") -> float:
    """One sample of a Prometheus text exposition on 127.0.0.1:`port` (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    prefix = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(prefix + " "):
            return float(line.split()[-1])
    return 0.0


# How a 403 shows in kopf's and the operator's logs: RBAC ('User "…" cannot list resource')
# and admission plugins (OwnerReferencesPermissionEnforcement) alike.
_REFUSAL = re.compile(r"403 Forbidden|is forbidden:|APIForbiddenError")
# The one 403 that is not about permissions: writing into a namespace being deleted.
_TERMINATING = "because it is being terminated"


def forbidden(log: str) -> list[str]:
    """The log lines that report a permission refusal."""
    return [line for line in log.splitlines()
            if _REFUSAL.search(line) and _TERMINATING not in line]


def example_files() -> list[Path]:
    return sorted(EXAMPLES.glob("*.yaml"))
