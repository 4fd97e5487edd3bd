"""The injected sidecar itself (`injection`): env, probes, security, resources, annotations."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from llmgate_operator import injection
from llmgate_operator.injection import SidecarOptions, build, parse_quantity
from llmgate_operator.webhook import review

from tests.webhook.reviews import (
    IMAGE,
    OPTIONS,
    admission_review,
    apply,
    env_of,
    pod,
    sidecar_of,
    validate_pod,
)


def annotated(**annotations: str) -> dict[str, Any]:
    obj = pod()
    obj["metadata"]["annotations"] = annotations
    return obj


def test_sidecar_env_ports_and_mounts_match_the_interface() -> None:
    container = build(pod(), OPTIONS).container
    assert container["name"] == "llmgate-sidecar"
    assert container["args"] == ["sidecar"]
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert env_of(container) == {
        "LLMGATE_CONFIG_DIR": "/etc/llmgate/config",
        "LLMGATE_CREDENTIALS_DIR": "/etc/llmgate/credentials",
        "LLMGATE_PORT": "4000",
        "LLMGATE_OPS_PORT": "9464",
        "POD_NAME": {"fieldRef": {"fieldPath": "metadata.name"}},
        "POD_NAMESPACE": {"fieldRef": {"fieldPath": "metadata.namespace"}},
    }
    assert container["ports"] == [{"name": "llmgate-ops", "containerPort": 9464,
                                   "protocol": "TCP"}]
    assert container["volumeMounts"] == [
        {"name": "llmgate-config", "mountPath": "/etc/llmgate/config", "readOnly": True},
        {"name": "llmgate-credentials", "mountPath": "/etc/llmgate/credentials",
         "readOnly": True},
    ]
    assert all("subPath" not in m for m in container["volumeMounts"])


def test_probes_gate_the_app_on_readiness_and_restart_on_liveness() -> None:
    container = build(pod(), OPTIONS).container
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "llmgate-ops"


def test_security_context_is_locked_down() -> None:
    security = build(pod(), OPTIONS).container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 65532
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}


def test_options_reach_the_sidecar_and_the_apps() -> None:
    options = SidecarOptions(image="registry.local/llmgate:9", redis_url="redis://redis:6379/0",
                             port=4100, ops_port=9500, pull_policy="Always")
    patched = apply(review(admission_review(pod()), options), pod())
    validate_pod(patched)
    sidecar = sidecar_of(patched)
    env = env_of(sidecar)
    assert sidecar["image"] == "registry.local/llmgate:9"
    assert sidecar["imagePullPolicy"] == "Always"
    assert env["LLMGATE_REDIS_URL"] == "redis://redis:6379/0"
    assert (env["LLMGATE_PORT"], env["LLMGATE_OPS_PORT"]) == ("4100", "9500")
    assert sidecar["ports"][0]["containerPort"] == 9500
    assert env_of(patched["spec"]["containers"][0]) == {
        "OPENAI_BASE_URL": "http://127.0.0.1:4100/v1",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:4100"}


def test_pod_bound_virtual_key_annotation() -> None:
    env = env_of(build(annotated(**{"llmgate.io/virtual-key": "team-a"}), OPTIONS).container)
    assert env["LLMGATE_VIRTUAL_KEY"] == "team-a"
    sidecar = build(annotated(**{"llmgate.io/virtual-key": "Team A!"}), OPTIONS)
    assert "LLMGATE_VIRTUAL_KEY" not in env_of(sidecar.container)
    assert any("virtual-key" in w for w in sidecar.warnings)


def test_default_resources() -> None:
    assert build(pod(), OPTIONS).container["resources"] == {
        "requests": {"cpu": "50m", "memory": "80Mi"}, "limits": {"memory": "256Mi"}}


def test_option_resources_replace_defaults_and_annotations_override_requests() -> None:
    chart = {"requests": {"cpu": "100m", "memory": "128Mi"},
             "limits": {"cpu": "1", "memory": "512Mi"}}
    options = SidecarOptions(IMAGE, resources=chart)
    assert build(pod(), options).container["resources"] == chart
    obj = annotated(**{"llmgate.io/sidecar-cpu": "250m", "llmgate.io/sidecar-memory": "200Mi"})
    sidecar = build(obj, options)
    assert sidecar.container["resources"] == {
        "requests": {"cpu": "250m", "memory": "200Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"}}
    assert sidecar.warnings == []
    assert chart["requests"] == {"cpu": "100m", "memory": "128Mi"}, "options were mutated"


def test_annotation_request_above_the_limit_raises_the_limit() -> None:
    # Left alone, the API server would reject the pod: request > limit.
    obj = annotated(**{"llmgate.io/sidecar-memory": "1Gi"})
    answer = review(admission_review(obj), OPTIONS)
    patched = apply(answer, obj)
    validate_pod(patched)
    assert sidecar_of(patched)["resources"] == {
        "requests": {"cpu": "50m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}
    assert any("limit" in w for w in answer["response"]["warnings"])


@pytest.mark.parametrize("value", ["lots", "-100m", "1.5 Gi", "100MB", ""])
def test_invalid_resource_annotations_are_ignored_with_a_warning(value: str) -> None:
    obj = annotated(**{"llmgate.io/sidecar-cpu": value})
    answer = review(admission_review(obj), OPTIONS)
    patched = apply(answer, obj)
    validate_pod(patched)
    assert sidecar_of(patched)["resources"]["requests"]["cpu"] == "50m"
    assert any("llmgate.io/sidecar-cpu" in w for w in answer["response"]["warnings"])


@pytest.mark.parametrize(("text", "value"), [
    ("100m", Decimal("0.1")), ("2", Decimal(2)), ("1.5Gi", Decimal(1.5 * 2**30)),
    ("64Mi", Decimal(64 * 2**20)), ("1e3", Decimal(1000)), ("1E", Decimal("1e18")),
    ("500k", Decimal(500_000)), (".5", Decimal("0.5")),
])
def test_parse_quantity(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("value", ["FALSE", "false", " false "])
def test_native_sidecar_opt_out_annotation(value: str) -> None:
    sidecar = build(annotated(**{"llmgate.io/native-sidecar": value}), OPTIONS)
    assert sidecar.native is False
    assert "restartPolicy" not in sidecar.container


def test_unreadable_native_annotation_keeps_native_and_warns() -> None:
    sidecar = build(annotated(**{"llmgate.io/native-sidecar": "maybe"}), OPTIONS)
    assert sidecar.native is True
    assert sidecar.container["restartPolicy"] == "Always"
    assert sidecar.warnings


def test_is_injected() -> None:
    assert not injection.is_injected(pod())
    assert not injection.is_injected({})
    assert injection.is_injected(apply(review(admission_review(pod()), OPTIONS), pod()))


@pytest.mark.parametrize("text", ["1e", "1e9999", "1Ki5", "m", "1.2.3", "\uff11"])
def test_parse_quantity_rejects(text: str) -> None:
    assert parse_quantity(text) is None


def test_empty_resources_option_means_none_and_annotations_still_apply() -> None:
    options = SidecarOptions(IMAGE, resources={})
    assert build(pod(), options).container["resources"] == {}
    obj = annotated(**{"llmgate.io/sidecar-memory": "96Mi"})
    patched = apply(review(admission_review(obj), options), obj)
    validate_pod(patched)
    assert sidecar_of(patched)["resources"] == {"requests": {"memory": "96Mi"}}
