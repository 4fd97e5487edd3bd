"""charts/llmgate rendered by the real Helm SDK: valid manifests, a strict values schema, an
operator Deployment whose flags the operator parses, least-privilege RBAC, and a webhook
configuration that selects exactly the pods the Interfaces promise.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from llmgate_operator import injection, settings, webhook

from tests.chart import rendering as r
from tests.contract import crd_schema

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "all-features": r.ALL_FEATURES,
    "webhook-off": {"webhook": {"enabled": False}},
    "external-redis": {"redis": {"url": "rediss://:secret@redis.example.internal:6380/2"}},
    "namespaced-incl-release": {"operator": {"watchNamespaces": [r.NAMESPACE, "apps"]}},
}
# Kinds from other projects' CRDs: kubernetes_validate has no schema for them.
NON_BUILTIN = {"ServiceMonitor", "PodMonitor", "Certificate", "Issuer", "ClusterKopfPeering",
               "KopfPeering"}


# --- CRDs -----------------------------------------------------------------------------------

# kopf's own peering CRDs ship with the chart (for operator.peering) but are not llmgate's.
KOPF_PEERING = "kopf-peering.yaml"


def test_chart_crds_are_byte_identical_to_crds_dir() -> None:
    ours = {p.name: p.read_bytes() for p in crd_schema.CRD_DIR.glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in crd_schema.CHART_CRD_DIR.glob("*.yaml")
             if p.name != KOPF_PEERING}
    assert chart == ours and len(ours) == 3


def test_helm_loads_the_crds() -> None:
    names = sorted(c["name"] for c in r.chart().crds)
    assert names == ["crds/kopf-peering.yaml", "crds/llmroutes.yaml",
                     "crds/providersecrets.yaml", "crds/virtualkeys.yaml"]


def test_kopf_peering_crds_are_valid_and_keep_status_unpruned() -> None:
    docs = [d for d in yaml.safe_load_all((crd_schema.CHART_CRD_DIR / KOPF_PEERING).read_text())
            if d]
    assert {(d["spec"]["names"]["kind"], d["spec"]["scope"]) for d in docs} == {
        ("ClusterKopfPeering", "Cluster"), ("KopfPeering", "Namespaced")}
    for crd in docs:
        kubernetes_validate.validate(crd, "1.30.0", strict=True)
        status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
        assert status["x-kubernetes-preserve-unknown-fields"] is True


# --- every manifest is valid ----------------------------------------------------------------

@pytest.mark.parametrize("name", VALUE_SETS)
def test_rendered_manifests_validate_strictly(name: str) -> None:
    docs = r.render(VALUE_SETS[name])
    assert docs
    for doc in docs:
        if doc["kind"] in NON_BUILTIN:
            continue
        assert kubernetes_validate.validate(doc, "1.30.0", strict=True) == "1.30", doc["kind"]


def test_default_install_renders_the_core_objects() -> None:
    assert r.kinds(r.render()) == sorted([
        "ClusterRole", "ClusterRole", "ClusterRoleBinding", "Deployment",
        "MutatingWebhookConfiguration", "NetworkPolicy", "PodDisruptionBudget", "Role",
        "RoleBinding", "Service",
        "Service", "ServiceAccount"])


def test_all_features_render_every_optional_object() -> None:
    found = set(r.kinds(r.render(r.ALL_FEATURES)))
    assert {"Certificate", "Issuer", "ServiceMonitor", "PodMonitor", "Role",
            "RoleBinding"} <= found
    assert len([d for d in r.render(r.ALL_FEATURES) if d["kind"] == "Deployment"]) == 2


@pytest.mark.parametrize("name", ["defaults", "all-features"])
def test_helm_lint_strict_is_clean(name: str) -> None:
    report = helm.lint(str(r.CHART_DIR), VALUE_SETS[name], strict=True, kube_version="v1.30.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []   # 1 = info


# --- values.schema.json ---------------------------------------------------------------------

def test_schema_accepts_defaults_and_every_value_set() -> None:
    for values in VALUE_SETS.values():
        r.chart().validate_schema(values)


@pytest.mark.parametrize("values", [
    {"operator": {"replicaCount": -1}},
    {"webhook": {"failurePolicy": "Sometimes"}},
    {"webhook": {"timeoutSeconds": 60}},
    {"replicaCount": 2},                                   # unknown top-level key (typo)
    {"operator": {"logLevel": "verbose"}},
    {"operator": {"watchNamespaces": ["Team_A"]}},
    {"redis": {"url": "http://redis:6379"}},
    {"sidecar": {"resources": {"requests": {"cpu": "lots"}}}},
    {"webhook": {"certManager": {"issuerRef": {"name": "ca", "kind": "Vault"}}}},
    {"podDisruptionBudget": {"maxUnavailable": -1}},
    {"ops": {"port": 70000}},
], ids=lambda v: str(v))
def test_schema_rejects_bad_values(values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        r.render(values)


# --- the operator Deployment ----------------------------------------------------------------

def _parse_operator_args(args: list[str], monkeypatch: pytest.MonkeyPatch
                         ) -> settings.OperatorSettings:
    for key in [k for k in os.environ if k.startswith("LLMGATE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("POD_NAMESPACE", "not-the-release-namespace")
    parser = argparse.ArgumentParser(exit_on_error=False)
    settings.add_arguments(parser)
    assert args[0] == "operator"
    return settings.from_args(parser.parse_args(args[1:]))


@pytest.mark.parametrize("name", VALUE_SETS)
def test_operator_args_are_flags_the_operator_parses(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    container = r.operator_container(r.render(VALUE_SETS[name]))
    parsed = _parse_operator_args(container["args"], monkeypatch)   # unknown flag: SystemExit
    assert parsed.sidecar_image == "ghcr.io/llmgate/llmgate-sidecar:0.1.0"
    assert parsed.sidecar_resources == {"requests": {"cpu": "50m", "memory": "80Mi"},
                                        "limits": {"memory": "256Mi"}}
    assert parsed.ops_port == 9464


def test_default_args_mean_what_the_chart_deploys(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed = _parse_operator_args(r.operator_container(r.render())["args"], monkeypatch)
    assert parsed.webhook_enabled and parsed.webhook_port == 9443
    assert parsed.webhook_namespace == r.NAMESPACE
    assert parsed.webhook_service == "llmgate-webhook"
    assert parsed.webhook_config_name == "llmgate-sidecar-injector"
    assert parsed.tls_secret == "llmgate-webhook-tls" and parsed.tls_dir is None
    assert parsed.namespaces == () and parsed.redis_url is None
    assert parsed.sidecar_redis_url is None
    assert parsed.ops_host == "0.0.0.0"


def test_ops_host_reaches_the_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    container = r.operator_container(r.render({"ops": {"host": "127.0.0.1"}}))
    assert _parse_operator_args(container["args"], monkeypatch).ops_host == "127.0.0.1"


def test_all_feature_args(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = r.render(r.ALL_FEATURES)
    parsed = _parse_operator_args(r.operator_container(docs)["args"], monkeypatch)
    assert parsed.namespaces == ("team-a", "team-b")
    assert parsed.log_level == "DEBUG"
    redis_service = r.find(docs, "Service", "gw-llmgate-redis")
    url = f"redis://gw-llmgate-redis.{r.NAMESPACE}.svc:6379/0"
    assert parsed.sidecar_redis_url == url and parsed.redis_url == url
    assert redis_service["spec"]["ports"][0]["port"] == 6379
    assert parsed.sidecar_cache_redis_url == url.replace(":6379/", ":6380/")
    # cert-manager: the operator reads the mounted certificate instead of managing one.
    assert parsed.tls_dir == "/etc/llmgate/tls"
    mount = next(m for m in r.operator_container(docs)["volumeMounts"]
                 if m["mountPath"] == parsed.tls_dir)
    volumes = r.find(docs, "Deployment", "gw-llmgate")["spec"]["template"]["spec"]["volumes"]
    secret = next(v for v in volumes if v["name"] == mount["name"])["secret"]["secretName"]
    assert secret == r.find(docs, "Certificate")["spec"]["secretName"]


def test_webhook_off_and_external_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = r.render(VALUE_SETS["webhook-off"])
    assert not _parse_operator_args(r.operator_container(docs)["args"], monkeypatch
                                    ).webhook_enabled
    assert "MutatingWebhookConfiguration" not in r.kinds(docs)
    docs = r.render(VALUE_SETS["external-redis"])
    parsed = _parse_operator_args(r.operator_container(docs)["args"], monkeypatch)
    assert parsed.sidecar_redis_url == "rediss://:secret@redis.example.internal:6380/2"
    assert r.kinds(docs).count("Deployment") == 1        # no bundled Redis


def test_chart_defaults_match_operator_defaults() -> None:
    values = r.chart().values
    assert values["webhook"]["serviceName"] == settings.DEFAULT_WEBHOOK_SERVICE
    assert values["webhook"]["configName"] == settings.DEFAULT_WEBHOOK_CONFIG_NAME
    assert values["webhook"]["tlsSecret"] == settings.DEFAULT_TLS_SECRET
    assert values["webhook"]["port"] == settings.DEFAULT_WEBHOOK_PORT
    assert values["ops"]["port"] == settings.DEFAULT_OPS_PORT
    # Without the chart, the operator injects the same sidecar the chart configures.
    assert values["sidecar"]["resources"] == injection.DEFAULT_RESOURCES
    args = r.operator_container(r.render())["args"]
    assert f"--sidecar-image={settings.DEFAULT_SIDECAR_IMAGE}" in args


def test_webhook_never_reaches_the_operators_protected_namespaces() -> None:
    mwc = r.find(r.render(), "MutatingWebhookConfiguration")
    for hook in mwc["webhooks"]:
        [expr] = [e for e in hook["namespaceSelector"]["matchExpressions"]
                  if e["key"] == "kubernetes.io/metadata.name"]
        assert expr["operator"] == "NotIn"
        assert set(webhook.PROTECTED_NAMESPACES) | {r.NAMESPACE} <= set(expr["values"])


def test_operator_pod_is_locked_down_and_probed() -> None:
    docs = r.render()
    pod = r.find(docs, "Deployment", "gw-llmgate")["spec"]["template"]["spec"]
    container = r.operator_container(docs)
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 65532
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"] == {"drop": ["ALL"]}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"webhook": 9443, "ops": 9464}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    env = {e["name"]: e.get("valueFrom") for e in container["env"]}
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_services_and_pdb_select_the_operator_pods() -> None:
    for values in ({}, r.ALL_FEATURES):
        docs = r.render(values)
        pod_labels = r.find(docs, "Deployment", "gw-llmgate")["spec"]["template"]["metadata"][
            "labels"]
        container_ports = {p["name"] for p in r.operator_container(docs)["ports"]}
        for svc in (r.find(docs, "Service", "llmgate-webhook"),
                    r.find(docs, "Service", "gw-llmgate-metrics")):
            assert svc["spec"]["selector"].items() <= pod_labels.items()
            assert {p["targetPort"] for p in svc["spec"]["ports"]} <= container_ports
        pdb = r.find(docs, "PodDisruptionBudget")
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    webhook_svc = r.find(r.render(), "Service", "llmgate-webhook")
    assert [(p["port"], p["targetPort"]) for p in webhook_svc["spec"]["ports"]] == [
        (443, "webhook")]


def test_monitors_scrape_real_ports() -> None:
    docs = r.render(r.ALL_FEATURES)
    monitor = r.find(docs, "ServiceMonitor")
    metrics = r.find(docs, "Service", "gw-llmgate-metrics")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= metrics["metadata"][
        "labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in metrics["spec"]["ports"]}
    assert monitor["metadata"]["labels"]["release"] == "prom"
    # Injected sidecars name their ops port llmgate-ops (see the Interfaces).
    assert r.find(docs, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["port"] == "llmgate-ops"


def test_notes_tell_how_to_opt_in() -> None:
    text = r.notes()
    assert 'llmgate.io/inject: "true"' in text
    assert "llmgate.io/inject=enabled" in text
    assert "without the sidecar" in text            # failurePolicy Ignore explained


def test_bundled_redis_never_evicts_policy_state() -> None:
    """Budgets live in an instance that never evicts (and persists with AOF); cache entries
    in another one, LRU-evicted under maxmemory: a maxmemory-policy is per instance."""
    docs = r.render({"redis": {"enabled": True}})
    pod = r.find(docs, "Deployment", "gw-llmgate-redis")["spec"]["template"]["spec"]
    args = {c["name"]: c["args"] for c in pod["containers"]}

    def flag(name: str, container: str) -> str | None:
        values = args[container]
        return values[values.index(name) + 1] if name in values else None

    assert flag("--maxmemory-policy", "redis") == "noeviction"
    assert flag("--maxmemory", "redis") is None
    assert flag("--appendonly", "redis") == "yes"
    assert flag("--appendfsync", "redis") == "everysec"
    assert flag("--maxmemory-policy", "redis-cache") == "allkeys-lru"
    assert flag("--maxmemory", "redis-cache") == "200mb"
    assert (flag("--port", "redis"), flag("--port", "redis-cache")) == ("6379", "6380")
    off = r.render({"redis": {"enabled": True, "persistence": {"enabled": False}}})
    pod = r.find(off, "Deployment", "gw-llmgate-redis")["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"][pod["containers"][0]["args"].index("--appendonly")
                                        + 1] == "no"
    claimed = r.render({"redis": {"enabled": True, "persistence": {"existingClaim": "aof"}}})
    pod = r.find(claimed, "Deployment", "gw-llmgate-redis")["spec"]["template"]["spec"]
    data = next(v for v in pod["volumes"] if v["name"] == "data")
    assert data["persistentVolumeClaim"]["claimName"] == "aof"
