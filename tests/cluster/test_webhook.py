"""Group 4: the real API server calls our webhook (TLS, with the caBundle the operator
manages) for the Pods the controller manager creates from a Deployment.

A Deployment labelled for injection becomes a ReplicaSet and a Pod that is stored with
the sidecar; pods of other shapes (kube-system, hostNetwork, opted out, not opted in) are
stored untouched. The operator's own metrics prove which pods went through the webhook.
"""

from __future__ import annotations

import base64

from llmgate_operator.injection import SIDECAR_NAME

from tests.cluster.api import Api, eventually, path
from tests.cluster.release import Operators, Release
from tests.cluster.workloads import (
    deployment,
    example,
    metric,
    namespace,
    pod,
    pods_of,
    wait_ready,
)

INJECT = {"llmgate.io/inject": "true"}


def _sidecar(stored: dict[str, object]) -> dict[str, object] | None:
    spec = stored["spec"]
    assert isinstance(spec, dict)
    for container in (spec.get("initContainers") or []) + spec["containers"]:
        if container["name"] == SIDECAR_NAME:
            return dict(container)
    return None


def _injected_count(operators: Operators) -> float:
    port = next(iter(operators.ops_ports.values()))
    return metric(port, "llmgate_operator_webhook_requests_total", 'result="injected"')


def test_the_operator_publishes_its_ca_bundle(admin: Api, operators: Operators,
                                              release: Release) -> None:
    mwc = admin.must(path("MutatingWebhookConfiguration", name="llmgate-sidecar-injector"))
    tls = admin.must(path("Secret", "llmgate-system", "llmgate-webhook-tls"))
    for webhook in mwc["webhooks"]:
        assert webhook["clientConfig"]["url"] == release.values["webhook"]["url"]
        assert base64.b64decode(webhook["clientConfig"]["caBundle"]) == \
            base64.b64decode(tls["data"]["ca.crt"])


def test_deployment_pod_is_stored_with_the_sidecar(admin: Api, operators: Operators) -> None:
    ns = namespace(admin, "inject-deploy")
    admin.apply_all(example("quickstart.yaml"), ns)
    wait_ready(admin, example("quickstart.yaml"), ns)
    before = _injected_count(operators)
    admin.apply(deployment("chat", INJECT), ns)
    [replica_set] = eventually(lambda: admin.items("ReplicaSet", ns), what="a ReplicaSet")
    assert replica_set["metadata"]["ownerReferences"][0]["name"] == "chat"
    [stored] = eventually(lambda: pods_of(admin, ns, "chat"), what="the Deployment's Pod")
    sidecar = _sidecar(stored)
    assert sidecar is not None, stored["spec"]
    # Native sidecar: the server's /version is >= 1.29, so an init container that keeps
    # running; the server accepted restartPolicy Always on it.
    assert stored["spec"]["initContainers"][0]["name"] == SIDECAR_NAME
    assert sidecar["restartPolicy"] == "Always"
    volumes = {v["name"] for v in stored["spec"]["volumes"]}
    assert {"llmgate-config", "llmgate-credentials"} <= volumes
    [app] = stored["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in app.get("env", [])}
    assert env["OPENAI_BASE_URL"] == "http://127.0.0.1:4000/v1"
    assert _injected_count(operators) >= before + 1


def test_the_injected_sidecar_passes_pod_security_restricted(admin: Api,
                                                             operators: Operators) -> None:
    """PodSecurity admission runs after the mutating webhooks: in a namespace enforcing the
    `restricted` profile, an injected pod is stored only if the sidecar complies too."""
    ns = namespace(admin, "inject-restricted",
                   {"pod-security.kubernetes.io/enforce": "restricted"})
    compliant = pod("restricted-app", INJECT,
                    securityContext={"runAsNonRoot": True, "runAsUser": 1000,
                                     "seccompProfile": {"type": "RuntimeDefault"}})
    compliant["spec"]["containers"][0]["securityContext"] = {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    stored = admin.create(compliant, ns)
    assert _sidecar(stored) is not None


def test_pods_of_other_shapes_are_stored_untouched(admin: Api, operators: Operators) -> None:
    plain = namespace(admin, "inject-none")
    opted_in_ns = namespace(admin, "inject-ns", {"llmgate.io/inject": "enabled"})
    cases = {
        ("kube-system", "system-pod"): pod("system-pod", INJECT),
        (plain, "host-network"): pod("host-network", INJECT, hostNetwork=True),
        (opted_in_ns, "opted-out"): pod("opted-out", {"llmgate.io/inject": "false"}),
        (plain, "not-opted-in"): pod("not-opted-in", {}),
    }
    for (ns, _), body in cases.items():
        created = admin.create(body, ns)
        assert _sidecar(created) is None, (ns, created["spec"])
        assert created["spec"].get("initContainers") is None
    # The control case: the namespace-wide opt-in does inject a pod that did not opt out.
    injected = admin.create(pod("namespace-wide", {}), opted_in_ns)
    assert _sidecar(injected) is not None
    for (ns, name) in cases:
        admin.delete(path("Pod", ns, name), propagation="Background")


def test_server_side_dry_run_shows_the_injection_and_stores_nothing(
        admin: Api, operators: Operators) -> None:
    """`kubectl apply --dry-run=server`: the API server calls webhooks declaring
    `sideEffects: None` for dry runs too, so users can preview the injected pod."""
    ns = namespace(admin, "inject-dry-run")
    preview = admin.request("POST", path("Pod", ns), pod("preview", INJECT),
                            params={"dryRun": "All"})
    assert _sidecar(preview) is not None
    assert admin.get(path("Pod", ns, "preview")) is None
