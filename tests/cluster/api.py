"""A small synchronous client for the test control plane's API server (httpx over TLS).

The cluster tests read and write objects through `Api` as the admin (client certificate)
or as a service account (bearer token); `eventually` polls for effects; `kubeconfig` writes
the file the operator and Helm log in with. Test helpers only: no assertions on the product.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml
from llmgate_operator import api as crds

PATIENCE = 60.0  # seconds before a wait gives up: a guard against hangs, not a timing claim
# How long a new (Cluster)RoleBinding may take to apply: kube-apiserver's RBAC authorizer
# reads bindings from an informer cache, so a grant the API has stored is honoured a moment
# later (milliseconds when idle, seconds on a loaded machine). A bound, not a timing claim.
GRANT_PATIENCE = 30.0
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"

# kind -> (api prefix, plural, namespaced) for every kind the tests write or read.
KINDS: dict[str, tuple[str, str, bool]] = {
    "Namespace": ("/api/v1", "namespaces", False),
    "Secret": ("/api/v1", "secrets", True),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "Service": ("/api/v1", "services", True),
    "Pod": ("/api/v1", "pods", True),
    "Event": ("/api/v1", "events", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "ReplicaSet": ("/apis/apps/v1", "replicasets", True),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets", True),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "MutatingWebhookConfiguration": ("/apis/admissionregistration.k8s.io/v1",
                                     "mutatingwebhookconfigurations", False),
    "CustomResourceDefinition": ("/apis/apiextensions.k8s.io/v1",
                                 "customresourcedefinitions", False),
    "ClusterKopfPeering": ("/apis/kopf.dev/v1", "clusterkopfpeerings", False),
    "KopfPeering": ("/apis/kopf.dev/v1", "kopfpeerings", True),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies", True),
    **{kind: (f"/apis/{crds.GROUP}/{crds.VERSION}", plural, True)
       for kind, plural in crds.PLURALS.items()},
}


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        message = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"{status}: {message}")
        self.status, self.body = status, body

    @property
    def message(self) -> str:
        return str(self.body.get("message") if isinstance(self.body, dict) else self.body)


def path(kind: str, namespace: str | None = None, name: str | None = None,
         subresource: str | None = None) -> str:
    prefix, plural, namespaced = KINDS[kind]
    out = prefix
    if namespaced and namespace:
        out += f"/namespaces/{namespace}"
    out += f"/{plural}"
    if name:
        out += f"/{name}"
    if subresource:
        out += f"/{subresource}"
    return out


def path_of(body: Mapping[str, Any], namespace: str | None = None) -> str:
    meta = body.get("metadata") or {}
    return path(body["kind"], meta.get("namespace") or namespace, meta.get("name"))


def eventually(probe: Callable[[], Any], *, what: str, timeout: float = PATIENCE,
               interval: float = 0.1) -> Any:
    """Poll `probe` until it returns something truthy; fail with `what` if it never does."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (ApiError, KeyError, AssertionError, httpx.TransportError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"never happened within {timeout:.0f} s: {what} (last: {last!r})")


class Api:
    """One identity's view of the API server."""

    def __init__(self, server: str, ca_file: Path, *, cert: tuple[Path, Path] | None = None,
                 token: str | None = None) -> None:
        context = ssl.create_default_context(cafile=str(ca_file))
        if cert:
            context.load_cert_chain(str(cert[0]), str(cert[1]))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.server, self.ca_file, self.token, self.cert = server, ca_file, token, cert
        self._http = httpx.Client(base_url=server, verify=context, headers=headers,
                                  timeout=30.0)

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, url: str, body: Any = None, *,
                content_type: str = "application/json", accept: str = "application/json",
                params: Mapping[str, str] | None = None) -> Any:
        headers = {"Accept": accept}
        kwargs: dict[str, Any] = {}
        if body is not None:
            headers["Content-Type"] = content_type
            kwargs["json"] = body
        response = self._http.request(method, url, headers=headers, params=params, **kwargs)
        try:
            doc = response.json() if response.content else {}
        except ValueError:
            doc = response.text
        if response.status_code >= 300:
            raise ApiError(response.status_code, doc)
        return doc

    def get(self, url: str, **kwargs: Any) -> Any:
        """The object at `url`, or None when it does not exist."""
        try:
            return self.request("GET", url, **kwargs)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def must(self, url: str) -> dict[str, Any]:
        found = self.get(url)
        assert found is not None, f"{url} does not exist"
        return dict(found)

    def create(self, body: Mapping[str, Any], namespace: str | None = None) -> dict[str, Any]:
        meta = body.get("metadata") or {}
        url = path(body["kind"], meta.get("namespace") or namespace)
        return dict(self.request("POST", url, dict(body), params={"fieldValidation": "Strict"}))

    def patch(self, url: str, body: Any, content_type: str = MERGE) -> dict[str, Any]:
        return dict(self.request("PATCH", url, body, content_type=content_type))

    def delete(self, url: str, *, propagation: str = "Background") -> None:
        try:
            self.request("DELETE", url, {"propagationPolicy": propagation})
        except ApiError as exc:
            if exc.status != 404:
                raise

    def apply(self, body: Mapping[str, Any], namespace: str | None = None) -> dict[str, Any]:
        """Create, or merge-patch what exists (as `kubectl apply` would end up)."""
        try:
            return self.create(body, namespace)
        except ApiError as exc:
            if exc.status != 409:
                raise
        return self.patch(path_of(body, namespace), dict(body))

    def apply_all(self, docs: Iterable[Mapping[str, Any]], namespace: str) -> None:
        for doc in docs:
            self.apply(doc, namespace)

    def items(self, kind: str, namespace: str | None = None,
              **params: str) -> list[dict[str, Any]]:
        return list(self.request("GET", path(kind, namespace), params=params)["items"])

    def can_i(self, verb: str, resource: str, namespace: str | None = None, *,
              group: str = "", subresource: str = "") -> bool:
        """SelfSubjectAccessReview: what `kubectl auth can-i` asks."""
        review = self.request(
            "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
             "spec": {"resourceAttributes": _attributes(verb, resource, namespace, group,
                                                        subresource)}})
        return bool(review["status"]["allowed"])

    def allows(self, user: str, groups: list[str], verb: str, resource: str,
               namespace: str | None = None, *, group: str = "") -> bool:
        """SubjectAccessReview: what `kubectl auth can-i --as` asks about another identity
        (this identity must be allowed to create the review, as the admin is)."""
        review = self.request(
            "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
             "spec": {"user": user, "groups": groups,
                      "resourceAttributes": _attributes(verb, resource, namespace, group,
                                                        "")}})
        return bool(review["status"]["allowed"])

    def wait_granted(self, verb: str, resource: str, namespace: str | None = None, *,
                     group: str = "") -> None:
        """Wait (at most GRANT_PATIENCE) until the authorizer allows this identity `verb` on
        `resource`: a grant just stored is honoured a moment later. Fails, naming the
        permission, if it never is."""
        where = f" in {namespace}" if namespace else " cluster-wide"
        eventually(lambda: self.can_i(verb, resource, namespace, group=group),
                   what=f"RBAC to allow {verb} on {resource}{where} (a binding that grants it "
                        f"exists)", timeout=GRANT_PATIENCE)


def _attributes(verb: str, resource: str, namespace: str | None, group: str,
                subresource: str) -> dict[str, str]:
    attributes = {"verb": verb, "resource": resource, "group": group,
                  "subresource": subresource}
    if namespace:
        attributes["namespace"] = namespace
    return attributes


def kubeconfig(server: str, ca_file: Path, *, cert: tuple[Path, Path] | None = None,
               token: str | None = None, namespace: str = "default") -> str:
    """A kubeconfig for one identity (client certificate or bearer token)."""
    user: dict[str, str] = {}
    if cert:
        user = {"client-certificate": str(cert[0]), "client-key": str(cert[1])}
    if token:
        user = {"token": token}
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": server,
                                                  "certificate-authority": str(ca_file)}}],
        "users": [{"name": "test", "user": user}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test",
                                                  "namespace": namespace}}],
    })


def load_docs(file: Path) -> list[dict[str, Any]]:
    with file.open() as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc]
