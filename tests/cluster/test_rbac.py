"""Least privilege, as the API server enforces the chart's RBAC: the operator's
ServiceAccount can read no Secret cluster-wide, nor in a namespace that did not bind the
chart's `llmgate-namespace` ClusterRole; such a namespace's CRs say AccessDenied, and the
RoleBinding a namespace admin creates (docs/install.md) is all it takes to be served.

Runs after test_operator.py (whose 'never refused' test reads the operator's log): the
403s this test provokes on purpose are logged.
"""

from __future__ import annotations

from tests.cluster.api import Api, eventually, path
from tests.cluster.control_plane import ControlPlane
from tests.cluster.release import NAMESPACE, Operators
from tests.cluster.workloads import (
    GRANT_ROLE,
    OPERATOR_GROUPS,
    OPERATOR_USER,
    grant_operator,
    namespace,
    ready,
)


def test_the_service_account_reads_no_secret_it_was_not_granted(
        control_plane: ControlPlane, admin: Api, operators: Operators) -> None:
    operator = control_plane.as_token(control_plane.service_account_token(NAMESPACE,
                                                                          "llmgate"))
    try:
        for verb in ("get", "list", "watch"):
            assert not operator.can_i(verb, "secrets"), f"cluster-wide {verb} on secrets"
            assert not operator.can_i(verb, "secrets", "kube-system")
            assert not operator.can_i(verb, "configmaps", "kube-system")
        # Its own certificate Secret, by name only; its CRs everywhere.
        assert operator.can_i("list", "virtualkeys", group="llmgate.io")
        # The grant applies through the authorizer's informer: `namespace` waits for it
        # (bounded), then the operator's own view must agree.
        granted = namespace(admin, "rbac-granted")
        assert operator.can_i("get", "secrets", granted)
    finally:
        operator.close()


def test_an_ungranted_namespace_says_access_denied_until_it_binds_the_role(
        admin: Api, operators: Operators) -> None:
    ns = namespace(admin, "rbac-locked", grant=False)
    admin.apply({"apiVersion": "llmgate.io/v1alpha1", "kind": "VirtualKey",
                 "metadata": {"name": "k"}, "spec": {}}, ns)
    condition = eventually(lambda: ready(admin, "VirtualKey", ns, "k"),
                           what="a Ready condition on the locked namespace's key")
    assert (condition["status"], condition["reason"]) == ("False", "AccessDenied")
    assert repr(GRANT_ROLE) in condition["message"]
    assert admin.get(path("Secret", ns, "k-llmgate-key")) is None
    # What grant_operator waits for is really refused before the grant (not always true).
    assert not admin.allows(OPERATOR_USER, OPERATOR_GROUPS, "get", "secrets", ns)

    grant_operator(admin, ns)
    eventually(lambda: (ready(admin, "VirtualKey", ns, "k") or {}).get("status") == "True",
               what="the key served once the namespace granted access", timeout=90)
    assert admin.must(path("Secret", ns, "k-llmgate-key"))["data"]["api-key"]
