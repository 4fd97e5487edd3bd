"""Group 1: `helm install/upgrade/uninstall` of charts/llmgate against the real API server.

The session's release (`release` fixture) must have every chart object accepted and the
CRDs Established; a second release (namespaced mode, bundled Redis) goes through the
whole lifecycle docs/install.md describes: upgrade with a changed value, then uninstall,
which removes the release's objects but keeps the CRDs and the users' CRs.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import helm_python as helm

from tests.cluster.api import Api, eventually, load_docs, path, path_of
from tests.cluster.binaries import ROOT, pinned
from tests.cluster.control_plane import ControlPlane
from tests.cluster.release import CHART, NAMESPACE, Release
from tests.cluster.workloads import namespace as namespace_of

LLMGATE_CRDS = ("providersecrets.llmgate.io", "llmroutes.llmgate.io", "virtualkeys.llmgate.io")
PEERING_CRDS = ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev")


def _established(admin: Api, name: str) -> bool:
    crd = admin.must(path("CustomResourceDefinition", name=name))
    conditions = {c["type"]: c["status"] for c in crd["status"].get("conditions", [])}
    return conditions.get("Established") == "True" and conditions.get("NamesAccepted") == "True"


def test_the_server_is_the_pinned_release(admin: Api) -> None:
    """What the operator reads to choose native sidecars (>= 1.29) is the pinned version."""
    version = admin.must("/version")
    assert version["gitVersion"] == pinned()["kubernetes"]
    assert (version["major"], version["minor"]) == tuple(
        pinned()["kubernetes"].lstrip("v").split(".")[:2])


def test_install_establishes_the_crds(admin: Api, release: Release) -> None:
    for name in LLMGATE_CRDS + PEERING_CRDS:
        eventually(lambda name=name: _established(admin, name), what=f"CRD {name} Established")
    discovery = admin.must("/apis/llmgate.io/v1alpha1")
    assert {r["name"] for r in discovery["resources"]} >= {
        "providersecrets", "providersecrets/status", "llmroutes", "llmroutes/status",
        "virtualkeys", "virtualkeys/status"}
    # `kubectl get llmgate` and the short names resolve through discovery.
    served = {r["name"]: r for r in discovery["resources"] if "/" not in r["name"]}
    assert {name: (r["shortNames"], r["categories"], r["namespaced"])
            for name, r in served.items()} == {
        "providersecrets": (["lgps"], ["llmgate"], True),
        "llmroutes": (["lgr"], ["llmgate"], True),
        "virtualkeys": (["lgvk"], ["llmgate"], True)}


def test_install_stores_every_chart_object(admin: Api, release: Release) -> None:
    manifests = release.manifests()
    kinds = sorted({doc["kind"] for doc in manifests})
    assert {"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service",
            "MutatingWebhookConfiguration", "ClusterKopfPeering"} <= set(kinds), kinds
    for doc in manifests:
        stored = admin.must(path_of(doc, NAMESPACE))
        assert stored["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert stored["metadata"]["annotations"]["meta.helm.sh/release-name"] == "llmgate"
    status = release.helm.status("llmgate")
    assert (status["status"], status["revision"]) == ("deployed", 1), status["status"]


def _operator_args(admin: Api, namespace: str, name: str) -> list[str]:
    deployment = admin.must(path("Deployment", namespace, name))
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return list(container["args"])


def test_upgrade_and_uninstall_behave_as_install_md_says(
        control_plane: ControlPlane, release: Release, tmp_path: Path) -> None:
    admin = control_plane.admin
    namespace, name = "llmgate-lifecycle", "lifecycle"
    for watched in ("lifecycle-a", "lifecycle-b"):
        # Granted to the suite's cluster-wide release too, which serves every namespace.
        namespace_of(admin, watched)
    values: dict[str, Any] = {
        "fullnameOverride": "lifecycle",
        "operator": {"watchNamespaces": ["lifecycle-a", "lifecycle-b"], "logLevel": "INFO"},
        "webhook": {"configName": "lifecycle-injector", "serviceName": "lifecycle-webhook"},
        "redis": {"enabled": True},
        "podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": None},
    }
    with helm.Config(kubeconfig_path=control_plane.admin_kubeconfig(),
                     namespace=namespace) as config:
        config.install(str(CHART), name, values, namespace=namespace, create_namespace=True,
                       timeout=120)
        assert "--log-level=INFO" in _operator_args(admin, namespace, "lifecycle")
        assert admin.get(path("Role", "lifecycle-a", "lifecycle")) is not None
        # The generated Redis password (docs/security.md) survives upgrades (helm lookup).
        password = admin.must(path("Secret", namespace, "lifecycle-redis"))["data"]

        upgraded = config.upgrade(str(CHART), name,
                                  values | {"operator": values["operator"] | {"logLevel": "DEBUG"}},
                                  namespace=namespace, timeout=120)
        assert (upgraded["revision"], upgraded["status"]) == (2, "deployed")
        assert "--log-level=DEBUG" in _operator_args(admin, namespace, "lifecycle")
        assert admin.must(path("Secret", namespace, "lifecycle-redis"))["data"] == password
        manifests = Release.parse(config.status(name)["manifest"])

        # A user's CR must survive the uninstall, as must the CRDs (docs/install.md).
        admin.create({"apiVersion": "llmgate.io/v1alpha1", "kind": "LLMRoute",
                      "metadata": {"name": "survivor", "namespace": "lifecycle-a"},
                      "spec": {"targets": [{"provider": "mock", "model": "m"}]}})
        config.uninstall(name, timeout=120)

    for doc in manifests:
        eventually(lambda doc=doc: admin.get(path_of(doc, namespace)) is None,
                   what=f"{doc['kind']} {doc['metadata']['name']} removed by uninstall")
    for crd in LLMGATE_CRDS:
        assert _established(admin, crd), crd
    assert admin.get(path("LLMRoute", "lifecycle-a", "survivor")) is not None
    admin.delete(path("Namespace", name=namespace))


def _documented_crd_command() -> str:
    commands = {match.group(0) for file in (ROOT / "docs" / "install.md", CHART / "README.md")
                for match in re.finditer(r"kubectl apply --server-side[^`\n]*charts/llmgate/crds/",
                                         file.read_text())}
    assert len(commands) == 1, f"the docs disagree on the CRD upgrade command: {commands}"
    return commands.pop()


def test_crd_upgrade_command_of_the_docs_applies_over_the_helm_install(
        admin: Api, release: Release) -> None:
    """docs/install.md: before `helm upgrade`, apply the new CRDs server-side. That is a
    server-side apply by field manager `kubectl` over CRDs Helm created (and owns): with a
    changed CRD, the documented command must not stop on Helm's field ownership."""
    command = _documented_crd_command()
    force = "true" if "--force-conflicts" in command else "false"

    def apply(body: dict[str, Any]) -> dict[str, Any]:
        return dict(admin.request("PATCH", path_of(body), body,
                                  content_type="application/apply-patch+yaml",
                                  params={"fieldManager": "kubectl", "force": force}))

    for file in sorted((CHART / "crds").glob("*.yaml")):
        for crd in load_docs(file):
            changed = copy.deepcopy(crd)
            changed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] = \
                "a newer chart's text"
            stored = apply(changed)
            assert stored["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
                "description"] == "a newer chart's text"
            apply(crd)  # back to this chart's version for the rest of the session
