"""Group 3: the operator, run as the chart's ServiceAccount (a TokenRequest token and the
RBAC exactly as the chart installed it), reconciles every file of examples/.

It writes the namespace's ConfigMap and Secret, a key Secret per VirtualKey (owned by it),
a Ready condition on every CR that `kubectl wait --for=condition=Ready` can read, and
Events. A permission the chart forgot shows up here: as a missing effect, or as a 403 in
the operator's log.
"""

from __future__ import annotations

import hashlib

import pytest

from tests.cluster.api import Api, eventually, path
from tests.cluster.release import NAMESPACE, Operators
from tests.cluster.workloads import (
    bundle,
    decoded,
    example,
    example_files,
    forbidden,
    is_cr,
    namespace,
    ready,
    wait_ready,
)

# Example CRs that are not Ready on purpose, and why (each file's comments say so). None:
# a key disabled on purpose (keys.yaml: suspended-intern) is Ready with reason Disabled, so
# GitOps tools that wait for Ready finish.
EXPECTED_NOT_READY: dict[tuple[str, str], str] = {}


@pytest.mark.parametrize("file", example_files(), ids=lambda p: p.stem)
def test_every_example_is_reconciled(admin: Api, operators: Operators, file: object) -> None:
    name = getattr(file, "name", "")
    ns = namespace(admin, f"ex-{name.removesuffix('.yaml')}")
    docs = example(name)
    if name == "routing.yaml":  # its routes use the providers of providers.yaml
        docs = example("providers.yaml") + docs
    admin.apply_all(docs, ns)
    conditions = wait_ready(admin, docs, ns)
    not_ready = {key: c["reason"] for key, c in conditions.items() if c["status"] != "True"}
    assert not_ready == {k: v for k, v in EXPECTED_NOT_READY.items() if k in conditions}, \
        (not_ready, operators.logs())

    served = eventually(lambda: bundle(admin, ns),
                        what=f"llmgate-config and llmgate-credentials in {ns}")
    assert served.config.namespace == ns
    assert {r.model for r in served.config.routes} == {
        (d.get("spec") or {}).get("model") or d["metadata"]["name"]
        for d in docs if d["kind"] == "LLMRoute" and conditions[("LLMRoute",
                                                                  d["metadata"]["name"])]
        ["status"] == "True"}
    for key in [d for d in docs if d["kind"] == "VirtualKey"]:
        secret_name = (key.get("spec") or {}).get("secretName") or \
            f"{key['metadata']['name']}-llmgate-key"
        value = decoded(admin.must(path("Secret", ns, secret_name)))["api-key"]
        assert value, secret_name
    for doc in [d for d in docs if is_cr(d)]:
        events = admin.items("Event", ns,
                             fieldSelector=f"involvedObject.name={doc['metadata']['name']},"
                                           f"involvedObject.kind={doc['kind']}")
        assert events, f"no Event for {doc['kind']}/{doc['metadata']['name']}"


def test_generated_key_secrets_are_owned_by_their_virtual_key(admin: Api,
                                                               operators: Operators) -> None:
    """The owner reference with blockOwnerDeletion passes OwnerReferencesPermissionEnforcement
    only because the chart grants virtualkeys/finalizers update."""
    ns = namespace(admin, "ex-owned")
    docs = [{"apiVersion": "llmgate.io/v1alpha1", "kind": "VirtualKey",
             "metadata": {"name": "owned"}, "spec": {}}]
    admin.apply_all(docs, ns)
    wait_ready(admin, docs, ns)
    key = admin.must(path("VirtualKey", ns, "owned"))
    secret = admin.must(path("Secret", ns, "owned-llmgate-key"))
    [owner] = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("VirtualKey", "owned",
                                                            key["metadata"]["uid"])
    assert owner.get("blockOwnerDeletion") is True and owner.get("controller") is True
    assert decoded(secret)["api-key"].startswith("lg-")


def test_the_operator_is_never_refused_by_rbac(operators: Operators, admin: Api) -> None:
    """Run after the examples: nothing the operator asked for was forbidden."""
    refused = forbidden(operators.logs(lines=0))
    assert not refused, refused


def test_the_operator_identity_is_the_charts_service_account(admin: Api,
                                                             operators: Operators) -> None:
    runner = next(iter(operators.running.values()))
    assert runner.pod["spec"]["serviceAccountName"] == "llmgate"
    token_config = (runner.workdir / "kubeconfig").read_text()
    assert "client-certificate" not in token_config and "token:" in token_config
    sa = admin.must(path("ServiceAccount", NAMESPACE, "llmgate"))
    assert sa["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"


def test_an_invalid_edit_keeps_the_last_good_route_served(admin: Api,
                                                          operators: Operators) -> None:
    """A block pattern the API server accepts (its schema cannot tell RE2 from other regex
    dialects) but the operator refuses: the route keeps its previous version in service,
    from `status.lastGood` written through the real status subresource."""
    ns = namespace(admin, "ex-last-good")
    docs = [{"apiVersion": "llmgate.io/v1alpha1", "kind": "ProviderSecret",
             "metadata": {"name": "mock"}, "spec": {"provider": "mock"}},
            {"apiVersion": "llmgate.io/v1alpha1", "kind": "LLMRoute",
             "metadata": {"name": "chat"},
             "spec": {"targets": [{"provider": "mock", "model": "m"}],
                      "guardrails": {"blockPatterns": ["secret"]}}}]
    admin.apply_all(docs, ns)
    wait_ready(admin, docs, ns)
    good = eventually(lambda: (admin.must(path("LLMRoute", ns, "chat")).get("status") or {})
                      .get("lastGood"), what="status.lastGood of the route")
    assert good["spec"]["guardrails"]["blockPatterns"] == ["secret"]
    admin.patch(path("LLMRoute", ns, "chat"),
                {"spec": {"guardrails": {"blockPatterns": [r"(a)\1"]}}})
    condition = eventually(lambda: (c := ready(admin, "LLMRoute", ns, "chat"))
                           and c["reason"] == "InvalidSpec" and c, what="InvalidSpec")
    assert condition["status"] == "False"
    assert f"still serving generation {good['generation']}" in condition["message"]
    served = bundle(admin, ns)
    assert served is not None
    [route] = served.config.routes
    assert route.name == "chat" and route.guardrails is not None
    assert route.guardrails.block_patterns == ["secret"]
    status = admin.must(path("LLMRoute", ns, "chat"))["status"]
    assert status["lastGood"] == good


def test_rotating_a_key_by_annotation(admin: Api, operators: Operators) -> None:
    """`kubectl annotate lgvk … llmgate.io/rotate=…`: an annotation does not bump the
    generation on a real server, yet it must issue a new key and keep the old one valid for
    the grace period."""
    ns = namespace(admin, "ex-rotate")
    docs = [{"apiVersion": "llmgate.io/v1alpha1", "kind": "VirtualKey",
             "metadata": {"name": "svc"}, "spec": {}}]
    admin.apply_all(docs, ns)
    wait_ready(admin, docs, ns)
    old = decoded(admin.must(path("Secret", ns, "svc-llmgate-key")))["api-key"]
    generation = admin.must(path("VirtualKey", ns, "svc"))["metadata"]["generation"]
    admin.patch(path("VirtualKey", ns, "svc"), {"metadata": {"annotations": {
        "llmgate.io/rotate": "2026-12", "llmgate.io/rotation-grace": "1s"}}})
    assert admin.must(path("VirtualKey", ns, "svc"))["metadata"]["generation"] == generation

    def key_hashes() -> list[str] | None:
        served = bundle(admin, ns)
        key = next((k for k in served.config.virtual_keys if k.name == "svc"), None) \
            if served else None
        return [h.sha256 for h in key.hashes] if key else None

    both = eventually(lambda: (x := key_hashes()) and len(x) == 2 and x,
                      what="the new and the old key both valid")
    new = decoded(admin.must(path("Secret", ns, "svc-llmgate-key")))["api-key"]
    assert new != old and new.startswith("lg-")
    assert both == [hashlib.sha256(k.encode()).hexdigest() for k in (new, old)]
    eventually(lambda: key_hashes() == [hashlib.sha256(new.encode()).hexdigest()],
               what="the old key dropped after the grace period (by the resync)")
