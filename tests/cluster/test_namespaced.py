"""Group 3, namespaced mode: `operator.watchNamespaces` gives the operator Roles in just those
namespaces, and that is enough for it to reconcile there (and all it can read).

A second release (webhook off, so it does not compete with the session's webhook) runs its
operator Pod as its own ServiceAccount. The session's cluster-wide operator reconciles the
same namespace too, so this operator's own metrics and log are what prove it worked.
"""

from __future__ import annotations

from pathlib import Path

import helm_python as helm

from tests.cluster.api import eventually
from tests.cluster.control_plane import ControlPlane
from tests.cluster.pods import PodRunner
from tests.cluster.release import CHART, Operators, Release
from tests.cluster.workloads import example, forbidden, metric, namespace, wait_ready
from tests.conftest import free_port

RELEASE, RELEASE_NS, WATCHED = "scoped", "llmgate-scoped", "scoped-a"


def test_a_namespaced_operator_reconciles_with_only_its_roles(
        control_plane: ControlPlane, release: Release, operators: Operators,
        tmp_path: Path) -> None:
    admin = control_plane.admin
    namespace(admin, WATCHED)
    ops = free_port()
    values = {"fullnameOverride": RELEASE, "operator": {"watchNamespaces": [WATCHED]},
              "webhook": {"enabled": False}, "ops": {"port": ops}}
    with helm.Config(kubeconfig_path=control_plane.admin_kubeconfig(),
                     namespace=RELEASE_NS) as config:
        config.install(str(CHART), RELEASE, values, namespace=RELEASE_NS,
                       create_namespace=True, timeout=120)
        runner = None
        try:
            [pod] = eventually(lambda: admin.items(
                "Pod", RELEASE_NS, labelSelector=f"app.kubernetes.io/instance={RELEASE}"),
                what="the namespaced operator's Pod")
            runner = PodRunner(control_plane, pod, tmp_path, container="operator").start()
            eventually(lambda: runner is not None and runner.serving(ops),
                       what="the namespaced operator ready")
            docs = example("quickstart.yaml")
            admin.apply_all(docs, WATCHED)
            wait_ready(admin, docs, WATCHED)
            eventually(lambda: metric(ops, "llmgate_operator_reconciles_total",
                                      'result="success"') > 0,
                       what="a successful reconcile by the namespaced operator")
            refused = forbidden(runner.tail(0))
            assert not refused, refused

            # Least privilege, as the chart says: Secrets of the watched namespace only.
            scoped = control_plane.as_token(
                control_plane.service_account_token(RELEASE_NS, RELEASE))
            try:
                # The chart's RoleBinding: honoured once the authorizer's informer has it.
                scoped.wait_granted("list", "secrets", WATCHED)
                assert not scoped.can_i("list", "secrets", "default")
                assert not scoped.can_i("list", "secrets")
            finally:
                scoped.close()
        finally:
            if runner is not None:
                runner.stop()
            config.uninstall(RELEASE, timeout=120)
