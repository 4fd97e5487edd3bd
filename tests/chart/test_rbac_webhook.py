"""The chart's RBAC grants what the operator needs and nothing more, and its
MutatingWebhookConfiguration selects exactly the pods the Interfaces promise.

No API server is here, so label selection is evaluated by a small matcher written from the
Kubernetes LabelSelector semantics (In, NotIn, Exists, DoesNotExist; a missing key matches
NotIn).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart import rendering as r

CRS = ["llmroutes", "providersecrets", "virtualkeys"]
# (apiGroup, resource) -> verbs the operator needs on its CRs wherever it compiles them.
RESOURCE_NEEDS = {
    **{("llmgate.io", cr): {"get", "list", "watch", "patch"} for cr in CRS},
    **{("llmgate.io", f"{cr}/status"): {"get", "patch"} for cr in CRS},
    ("llmgate.io", "virtualkeys/finalizers"): {"update"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
    # Read only: which sidecar versions run (llmgate_operator_sidecar_pods).
    ("", "pods"): {"list", "watch"},
}
# What a namespace grants: only ever per namespace (Role, or RoleBinding of a ClusterRole).
DATA_NEEDS = {
    ("", "configmaps"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "secrets"): {"get", "list", "watch", "create", "patch", "delete"},
}
NAMESPACED_NEEDS = {**RESOURCE_NEEDS, **DATA_NEEDS}
CLUSTER_NEEDS = {
    ("", "namespaces"): {"list", "watch"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
}
MWC = ("admissionregistration.k8s.io", "mutatingwebhookconfigurations")


def _grants(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants.setdefault((group, resource), set()).update(rule["verbs"])
    return grants


def _roles(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("Role", "ClusterRole")]


@pytest.mark.parametrize("values", [{}, r.ALL_FEATURES, {"webhook": {"enabled": False}}])
def test_no_wildcards_anywhere(values: dict[str, Any]) -> None:
    for role in _roles(r.render(values)):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(field, []), (role["metadata"], rule)
            assert "nonResourceURLs" not in rule


def _cluster_bound(docs: list[dict[str, Any]]) -> dict[str, dict[tuple[str, str], set[str]]]:
    """Grants of every ClusterRole that a ClusterRoleBinding binds (i.e. valid everywhere)."""
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterRole"}
    return {b["roleRef"]["name"]: _grants(roles[b["roleRef"]["name"]])
            for b in docs if b["kind"] == "ClusterRoleBinding"}


@pytest.mark.parametrize("values", [{}, r.ALL_FEATURES, {"webhook": {"enabled": False}},
                                    {"operator": {"peering": {"enabled": True}}}])
def test_no_cluster_wide_secret_or_configmap_access(values: dict[str, Any]) -> None:
    for name, grants in _cluster_bound(r.render(values)).items():
        assert not {("", "secrets"), ("", "configmaps")} & set(grants), name


def test_clusterwide_grants_exactly_what_the_operator_needs() -> None:
    docs = r.render()
    cluster_role = r.find(docs, "ClusterRole", "gw-llmgate")
    assert _grants(cluster_role) == {**CLUSTER_NEEDS, **RESOURCE_NEEDS, MWC: {"get", "patch"}}
    # The webhook configuration: only the operator's own, by name.
    mwc_rule = next(rule for rule in cluster_role["rules"]
                    if "mutatingwebhookconfigurations" in rule["resources"])
    assert mwc_rule["resourceNames"] == ["llmgate-sidecar-injector"]
    binding = r.find(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == cluster_role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "gw-llmgate",
                                    "namespace": r.NAMESPACE}]
    # Secrets and ConfigMaps: a ClusterRole for namespaces to bind, bound nowhere by default.
    grant = r.find(docs, "ClusterRole", "gw-llmgate-namespace")
    assert _grants(grant) == DATA_NEEDS
    assert not [d for d in docs if d["kind"] == "RoleBinding"
                and d["roleRef"]["name"] == "gw-llmgate-namespace"]
    # The operator names that ClusterRole in AccessDenied conditions.
    assert "--namespace-role=gw-llmgate-namespace" in r.operator_container(docs)["args"]
    # The release namespace: the webhook certificate Secret by name, nothing else of Secrets.
    role = r.find(docs, "Role", "gw-llmgate")
    assert role["metadata"]["namespace"] == r.NAMESPACE
    assert _grants(role) == {("", "secrets"): {"get", "patch", "create"},
                             ("", "events"): {"create", "patch"}}
    named = next(rule for rule in role["rules"] if "get" in rule["verbs"])
    assert named["resourceNames"] == ["llmgate-webhook-tls"]


def test_granted_namespaces_and_the_cluster_wide_opt_in() -> None:
    docs = r.render({"rbac": {"grantNamespaces": ["team-a", "team-b"]}})
    grants = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "RoleBinding"
              and d["roleRef"]["name"] == "gw-llmgate-namespace"}
    assert set(grants) == {"team-a", "team-b"}
    assert all(g["roleRef"]["kind"] == "ClusterRole" for g in grants.values())
    assert "gw-llmgate-namespace" not in _cluster_bound(docs)

    wide = _cluster_bound(r.render({"rbac": {"clusterWideSecrets": True}}))
    assert wide["gw-llmgate-namespace"] == DATA_NEEDS


def test_watched_namespaces_use_roles_only() -> None:
    docs = r.render(r.ALL_FEATURES)
    # cert-manager issues the certificate: nothing cluster-scoped at all.
    assert not {"ClusterRole", "ClusterRoleBinding"} & set(r.kinds(docs))
    roles = {d["metadata"]["namespace"]: _grants(d) for d in docs if d["kind"] == "Role"}
    assert set(roles) == {"team-a", "team-b", r.NAMESPACE}
    # ALL_FEATURES runs two replicas with peering: each watched namespace has its KopfPeering.
    peering = {("kopf.dev", "kopfpeerings"): {"list", "watch", "get", "patch"}}
    assert roles["team-a"] == roles["team-b"] == {**NAMESPACED_NEEDS, **peering}
    # The release namespace (not watched), certificates by cert-manager: events only.
    assert roles[r.NAMESPACE] == {("", "events"): {"create", "patch"}}
    bindings = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "RoleBinding"}
    assert set(bindings) == set(roles)
    for binding in bindings.values():
        assert binding["subjects"][0]["name"] == "gw-llmgate"


def test_watched_namespaces_with_operator_managed_certificates() -> None:
    docs = r.render({"operator": {"watchNamespaces": ["team-a"]}})
    # Cluster-scoped: only the caBundle of the one webhook configuration.
    assert _cluster_bound(docs) == {"gw-llmgate": {MWC: {"get", "patch"}}}


def test_watching_the_release_namespace_gives_it_the_full_role() -> None:
    docs = r.render({"operator": {"watchNamespaces": [r.NAMESPACE]}})
    [role] = [d for d in docs if d["kind"] == "Role"]
    assert role["metadata"]["namespace"] == r.NAMESPACE
    assert _grants(role) == NAMESPACED_NEEDS


def test_no_rbac_when_disabled() -> None:
    assert not {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"} & set(
        r.kinds(r.render({"rbac": {"create": False}})))


# --- the webhook configuration --------------------------------------------------------------

def test_webhooks_follow_the_interfaces() -> None:
    docs = r.render()
    mwc = r.find(docs, "MutatingWebhookConfiguration", "llmgate-sidecar-injector")
    assert len(mwc["webhooks"]) == 2
    service = r.find(docs, "Service", "llmgate-webhook")
    for hook in mwc["webhooks"]:
        assert hook["failurePolicy"] == "Ignore" and hook["sideEffects"] == "None"
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["reinvocationPolicy"] == "IfNeeded" and hook["timeoutSeconds"] == 5
        assert hook["clientConfig"]["service"] == {
            "name": service["metadata"]["name"], "namespace": r.NAMESPACE,
            "path": "/mutate-pods", "port": service["spec"]["ports"][0]["port"]}
        assert "caBundle" not in hook["clientConfig"]     # the operator patches it in
        assert hook["rules"] == [{"operations": ["CREATE"], "apiGroups": [""],
                                  "apiVersions": ["v1"], "resources": ["pods"],
                                  "scope": "Namespaced"}]
    assert "annotations" not in mwc["metadata"]


def test_failure_policy_and_cert_manager_from_values() -> None:
    docs = r.render(r.ALL_FEATURES)
    mwc = r.find(docs, "MutatingWebhookConfiguration")
    assert {h["failurePolicy"] for h in mwc["webhooks"]} == {"Fail"}
    cert = r.find(docs, "Certificate")
    assert mwc["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": f"{r.NAMESPACE}/{cert['metadata']['name']}"}
    assert f"llmgate-webhook.{r.NAMESPACE}.svc" in cert["spec"]["dnsNames"]
    issuer = r.find(docs, "Issuer")
    assert cert["spec"]["issuerRef"]["name"] == issuer["metadata"]["name"]
    docs = r.render({"webhook": {"certManager": {
        "enabled": True, "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}}}})
    assert "Issuer" not in r.kinds(docs)
    assert r.find(docs, "Certificate")["spec"]["issuerRef"] == {"name": "corp-ca",
                                                               "kind": "ClusterIssuer"}


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {"In": key in labels and labels[key] in values,
              "NotIn": key not in labels or labels[key] not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def _fired(mwc: dict[str, Any], namespace: str, ns_labels: dict[str, str],
           pod_labels: dict[str, str]) -> list[str]:
    # The API server always sets this label on namespaces (Kubernetes >= 1.21).
    ns_labels = {**ns_labels, "kubernetes.io/metadata.name": namespace}
    return [h["name"] for h in mwc["webhooks"]
            if _matches(h["namespaceSelector"], ns_labels)
            and _matches(h["objectSelector"], pod_labels)]


ON = {"llmgate.io/inject": "true"}
OFF = {"llmgate.io/inject": "false"}
ENABLED_NS = {"llmgate.io/inject": "enabled"}


@pytest.mark.parametrize("namespace,ns_labels,pod_labels,fires", [
    ("apps", {}, ON, ["pods.inject.llmgate.io"]),
    ("apps", {}, {}, []),
    ("apps", {}, {"app": "web"}, []),
    ("apps", ENABLED_NS, {"app": "web"}, ["namespaces.inject.llmgate.io"]),
    ("apps", ENABLED_NS, ON, ["pods.inject.llmgate.io"]),          # once, not twice
    ("apps", ENABLED_NS, OFF, []),                                   # the pod opts out
    ("apps", {"llmgate.io/inject": "disabled"}, {}, []),
    ("kube-system", ENABLED_NS, ON, []),                             # never kube-system
    (r.NAMESPACE, ENABLED_NS, ON, []),                               # nor the operator's
])
def test_webhook_selection(namespace: str, ns_labels: dict[str, str],
                           pod_labels: dict[str, str], fires: list[str]) -> None:
    mwc = r.find(r.render(), "MutatingWebhookConfiguration")
    assert _fired(mwc, namespace, ns_labels, pod_labels) == fires


def test_extra_excluded_namespaces() -> None:
    mwc = r.find(r.render(r.ALL_FEATURES), "MutatingWebhookConfiguration")
    assert _fired(mwc, "monitoring", ENABLED_NS, ON) == []
    assert _fired(mwc, "team-a", ENABLED_NS, ON) == ["pods.inject.llmgate.io"]


def test_peering_adds_the_peering_object_and_just_its_permissions() -> None:
    docs = r.render({"operator": {"replicaCount": 2, "peering": {"enabled": True}}})
    peering = r.find(docs, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "llmgate"
    container = r.find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "--peering=llmgate" in container["args"]
    grants = _grants(r.find(docs, "ClusterRole", "gw-llmgate"))
    assert grants[("kopf.dev", "clusterkopfpeerings")] == {"list", "watch", "get", "patch"}
    named = [rule for rule in r.find(docs, "ClusterRole", "gw-llmgate")["rules"]
             if rule["resources"] == ["clusterkopfpeerings"] and "patch" in rule["verbs"]]
    assert named and named[0]["resourceNames"] == ["llmgate"]


def test_namespaced_peering_meets_in_each_watched_namespace() -> None:
    docs = r.render({"operator": {"watchNamespaces": ["team-a", "team-b"],
                                  "peering": {"enabled": True, "name": "gw"}}})
    peerings = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "KopfPeering"}
    assert set(peerings) == {"team-a", "team-b"}
    roles = {d["metadata"]["namespace"]: _grants(d) for d in docs if d["kind"] == "Role"}
    assert roles["team-a"][("kopf.dev", "kopfpeerings")] == {"list", "watch", "get", "patch"}
    assert ("kopf.dev", "clusterkopfpeerings") not in {
        grant for grants in _cluster_bound(docs).values() for grant in grants}


def test_no_peering_by_default() -> None:
    docs = r.render()
    assert not {"ClusterKopfPeering", "KopfPeering"} & set(r.kinds(docs))
    assert not any(group == "kopf.dev"
                   for group, _ in _grants(r.find(docs, "ClusterRole", "gw-llmgate")))
