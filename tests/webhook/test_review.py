"""`webhook.review` on pods of every shape: the patch is applied as the API server would,
and the resulting pod is checked (and validated against the Kubernetes 1.30 schema)."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest
from llmgate_contract import POD_BOUND_KEY
from llmgate_operator.injection import SidecarOptions
from llmgate_operator.webhook import decide, review

from tests.webhook.reviews import (
    IMAGE,
    OPTIONS,
    admission_review,
    apply,
    env_of,
    patch_ops,
    pod,
    sidecar_of,
    validate_pod,
)

UID = "8e1f0a3c-1111-4b5e-9c1e-0123456789ab"
BASE_URLS = {"OPENAI_BASE_URL": "http://127.0.0.1:4000/v1",
             "ANTHROPIC_BASE_URL": "http://127.0.0.1:4000"}


def inject(obj: dict[str, Any], options: SidecarOptions = OPTIONS, **kw: Any) -> dict[str, Any]:
    answer = review(admission_review(obj, **kw), options)
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == UID
    assert answer["response"]["allowed"] is True
    assert patch_ops(answer), "expected a patch"
    return apply(answer, obj)


def test_deployment_pod_gets_native_sidecar_volumes_and_base_urls() -> None:
    original = pod()
    patched = inject(original)
    validate_pod(patched)
    init = patched["spec"]["initContainers"]
    assert [c["name"] for c in init] == ["llmgate-sidecar"]
    assert init[0]["restartPolicy"] == "Always"
    assert init[0]["image"] == IMAGE
    assert [c["name"] for c in patched["spec"]["containers"]] == ["app"]
    assert env_of(patched["spec"]["containers"][0]) == BASE_URLS
    assert patched["spec"]["volumes"] == [
        {"name": "llmgate-config", "configMap": {"name": "llmgate-config", "optional": True}},
        {"name": "llmgate-credentials",
         "secret": {"secretName": "llmgate-credentials", "optional": True}},
    ]
    assert patched["metadata"] == original["metadata"]


def test_sidecar_goes_before_existing_init_containers() -> None:
    migrate = {"name": "migrate", "image": "app:1", "command": ["./migrate"]}
    patched = inject(pod(initContainers=[migrate]))
    validate_pod(patched)
    assert [c["name"] for c in patched["spec"]["initContainers"]] == ["llmgate-sidecar",
                                                                       "migrate"]
    assert patched["spec"]["initContainers"][1] == migrate


def test_app_env_is_kept_and_only_missing_base_urls_are_added() -> None:
    app = {"name": "app", "image": "a", "env": [
        {"name": "OPENAI_BASE_URL", "value": "https://proxy.internal/v1"},
        {"name": "LOG_LEVEL", "value": "debug"}]}
    worker = {"name": "worker", "image": "w", "env": [
        {"name": "ANTHROPIC_BASE_URL",
         "valueFrom": {"configMapKeyRef": {"name": "urls", "key": "anthropic"}}}]}
    patched = inject(pod(app, worker))
    validate_pod(patched)
    app_env, worker_env = (env_of(c) for c in patched["spec"]["containers"])
    assert app_env == {"OPENAI_BASE_URL": "https://proxy.internal/v1", "LOG_LEVEL": "debug",
                       "ANTHROPIC_BASE_URL": BASE_URLS["ANTHROPIC_BASE_URL"]}
    assert worker_env["ANTHROPIC_BASE_URL"] == {
        "configMapKeyRef": {"name": "urls", "key": "anthropic"}}
    assert worker_env["OPENAI_BASE_URL"] == BASE_URLS["OPENAI_BASE_URL"]
    # The user's own entries keep their order, ours come after them.
    assert [e["name"] for e in patched["spec"]["containers"][0]["env"]][:2] == [
        "OPENAI_BASE_URL", "LOG_LEVEL"]


def test_env_from_and_null_env_are_handled() -> None:
    app = {"name": "app", "image": "a", "env": None,
           "envFrom": [{"configMapRef": {"name": "app-settings"}}]}
    patched = inject(pod(app))
    validate_pod(patched)
    container = patched["spec"]["containers"][0]
    assert container["envFrom"] == [{"configMapRef": {"name": "app-settings"}}]
    assert env_of(container) == BASE_URLS


def test_clashing_volume_names_get_a_free_name_and_the_mounts_follow() -> None:
    app = {"name": "app", "image": "a",
           "volumeMounts": [{"name": "llmgate-config", "mountPath": "/cache"}]}
    theirs = {"name": "llmgate-config", "emptyDir": {}}
    patched = inject(pod(app, volumes=[theirs, {"name": "llmgate-config-2", "emptyDir": {}}]))
    validate_pod(patched)
    names = [v["name"] for v in patched["spec"]["volumes"]]
    assert names == ["llmgate-config", "llmgate-config-2", "llmgate-config-3",
                     "llmgate-credentials"]
    assert patched["spec"]["volumes"][0] == theirs
    mounts = {m["mountPath"]: m["name"] for m in sidecar_of(patched)["volumeMounts"]}
    assert mounts == {"/etc/llmgate/config": "llmgate-config-3",
                      "/etc/llmgate/credentials": "llmgate-credentials"}
    assert patched["spec"]["containers"][0]["volumeMounts"] == app["volumeMounts"]


def test_an_identical_existing_volume_is_reused_not_duplicated() -> None:
    mine = {"name": "llmgate-credentials",
            "secret": {"secretName": "llmgate-credentials", "optional": True}}
    patched = inject(pod(volumes=[mine]))
    validate_pod(patched)
    assert [v["name"] for v in patched["spec"]["volumes"]] == ["llmgate-credentials",
                                                               "llmgate-config"]


@pytest.mark.parametrize("volumes", [None, []], ids=["null", "empty"])
def test_null_or_empty_volume_list(volumes: list[Any] | None) -> None:
    patched = inject(pod(volumes=volumes))
    validate_pod(patched)
    assert len(patched["spec"]["volumes"]) == 2


def test_pod_without_metadata_spec_or_containers_still_gets_a_valid_patch() -> None:
    for obj in ({"apiVersion": "v1", "kind": "Pod"},
                {"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": {}},
                {"apiVersion": "v1", "kind": "Pod", "spec": {"containers": None}},
                {"apiVersion": "v1", "kind": "Pod", "spec": None,
                 "metadata": {"labels": None, "annotations": None}}):
        patched = inject(obj)
        assert sidecar_of(patched)["restartPolicy"] == "Always"
        assert len(patched["spec"]["volumes"]) == 2
        assert not patched["spec"].get("containers")


def test_regular_container_fallback_by_annotation_or_option() -> None:
    annotated = pod()
    annotated["metadata"]["annotations"] = {"llmgate.io/native-sidecar": "false"}
    for obj, options in ((annotated, OPTIONS), (pod(), SidecarOptions(IMAGE, native=False))):
        patched = inject(obj, options)
        validate_pod(patched)
        assert "initContainers" not in patched["spec"]
        assert [c["name"] for c in patched["spec"]["containers"]] == ["app", "llmgate-sidecar"]
        assert "restartPolicy" not in sidecar_of(patched)


def test_regular_sidecar_in_a_job_pod_warns_that_it_will_not_complete() -> None:
    job_pod = pod(restartPolicy="Never")
    answer = review(admission_review(job_pod), SidecarOptions(IMAGE, native=False))
    assert any("will not complete" in w for w in answer["response"]["warnings"])
    # Native sidecars do not hold Jobs open: no warning then.
    assert "warnings" not in review(admission_review(job_pod), OPTIONS)["response"]


@pytest.mark.parametrize("options", [OPTIONS, SidecarOptions(IMAGE, native=False)],
                         ids=["native", "regular"])
def test_injection_is_idempotent(options: SidecarOptions) -> None:
    obj = pod(pod()["spec"]["containers"][0], volumes=[{"name": "data", "emptyDir": {}}],
              initContainers=[{"name": "init", "image": "busybox"}])
    first = review(admission_review(obj), options)
    patched = apply(first, obj)
    # A review of the injected pod (a reinvocation) changes nothing ...
    again = decide(admission_review(patched), options)
    assert again.result == "skipped"
    assert again.response["response"] == {"uid": UID, "allowed": True}
    # ... and re-applying the first patch to the patched pod changes nothing either.
    assert jsonpatch.apply_patch(copy.deepcopy(patched), patch_ops(first)) == patched


def test_regular_sidecar_counts_as_injected_too() -> None:
    patched = inject(pod(), SidecarOptions(IMAGE, native=False))
    assert patch_ops(review(admission_review(patched), OPTIONS)) == []


def test_patch_ops_only_add_whole_arrays_under_spec() -> None:
    ops = patch_ops(review(admission_review(pod()), OPTIONS))
    assert {op["op"] for op in ops} == {"add"}
    assert {op["path"] for op in ops} == {"/spec/initContainers", "/spec/containers",
                                          "/spec/volumes"}


@pytest.mark.parametrize(("mutate", "namespace", "warned"), [
    (lambda p: p["metadata"]["labels"].update({"llmgate.io/inject": "false"}), "apps", False),
    (lambda p: None, "kube-system", True),
    (lambda p: p["spec"].update(hostNetwork=True), "apps", True),
    (lambda p: p["spec"].update(os={"name": "windows"}), "apps", True),
], ids=["opted-out", "kube-system", "host-network", "windows"])
def test_pods_that_are_never_touched(mutate: Any, namespace: str, warned: bool) -> None:
    obj = pod()
    mutate(obj)
    decision = decide(admission_review(obj, namespace=namespace), OPTIONS)
    assert decision.result == "skipped"
    assert decision.response["response"]["allowed"] is True
    assert "patch" not in decision.response["response"]
    assert ("warnings" in decision.response["response"]) is warned


def test_kube_system_is_recognised_from_the_pod_metadata_too() -> None:
    obj = pod()
    obj["metadata"]["namespace"] = "kube-system"
    assert decide(admission_review(obj, namespace=None), OPTIONS).result == "skipped"


@pytest.mark.parametrize(("operation", "kind"), [("UPDATE", "Pod"), ("DELETE", "Pod"),
                                                 ("CREATE", "Deployment")])
def test_only_pod_creation_is_mutated(operation: str, kind: str) -> None:
    decision = decide(admission_review(pod(), operation=operation, kind=kind), OPTIONS)
    assert decision.result == "skipped"
    assert "patch" not in decision.response["response"]


@pytest.mark.parametrize("body", [
    None, [], "AdmissionReview", {},
    {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"},
    {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": ""}},
    {"apiVersion": "v1", "kind": "Pod", "request": {"uid": "x"}},
], ids=["null", "list", "string", "empty", "no-request", "no-uid", "wrong-kind"])
def test_malformed_reviews_get_a_clear_error_answer(body: Any) -> None:
    decision = decide(body, OPTIONS)
    assert decision.result == "error"
    response = decision.response["response"]
    assert response["allowed"] is True
    assert response["status"]["code"] == 400
    assert response["status"]["message"]
    assert "patch" not in response


@pytest.mark.parametrize("obj", [
    ["not", "a", "pod"],
    {"spec": {"containers": "app"}},
    {"spec": {"containers": ["app"]}},
    {"spec": {"containers": [{"name": "app"}], "volumes": {"a": 1}}},
], ids=["list", "containers-string", "container-string", "volumes-dict"])
def test_unreadable_pods_are_admitted_untouched_with_a_warning(obj: Any) -> None:
    decision = decide(admission_review(obj), OPTIONS)
    assert decision.result == "error"
    response = decision.response["response"]
    assert response == {"uid": UID, "allowed": True, "warnings": response["warnings"]}
    assert "not injected" in response["warnings"][0]


def test_v1beta1_reviews_are_answered_in_kind() -> None:
    body = admission_review(pod())
    body["apiVersion"] = "admission.k8s.io/v1beta1"
    answer = review(body, OPTIONS)
    assert answer["apiVersion"] == "admission.k8s.io/v1beta1"
    assert patch_ops(answer)


def test_app_ports_clashing_with_the_sidecar_are_warned_about() -> None:
    app = {"name": "app", "image": "a", "ports": [{"containerPort": 4000}]}
    answer = review(admission_review(pod(app)), OPTIONS)
    assert any("port 4000" in w for w in answer["response"]["warnings"])
    validate_pod(apply(answer, pod(app)))


def test_the_schema_check_used_above_does_reject_a_broken_pod() -> None:
    patched = inject(pod())
    patched["spec"]["initContainers"][0]["restartPolicy"] = 7
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_pod(patched)
    patched = inject(pod())
    patched["spec"]["initContainers"][0]["sidecar"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_pod(patched)


def test_warnings_stay_short_enough_for_the_api_server() -> None:
    obj = pod()
    obj["metadata"]["annotations"] = {"llmgate.io/sidecar-cpu": "x" * 5000}
    warnings = review(admission_review(obj), OPTIONS)["response"]["warnings"]
    assert warnings and all(len(w) <= 250 for w in warnings)
    assert warnings[0].startswith("llmgate: ignoring annotation llmgate.io/sidecar-cpu")


def test_a_pod_bound_to_a_key_gets_a_placeholder_key_its_sdk_can_start_with() -> None:
    bound = pod({"name": "app", "image": "python:3.12"},
                {"name": "side", "image": "busybox",
                 "env": [{"name": "OPENAI_API_KEY", "value": "own-key"}]})
    bound["metadata"]["annotations"] = {"llmgate.io/virtual-key": "team"}
    patched = apply(review(admission_review(bound), OPTIONS), bound)
    validate_pod(patched)
    app, side = patched["spec"]["containers"]
    assert env_of(app)["OPENAI_API_KEY"] == POD_BOUND_KEY
    assert env_of(app)["ANTHROPIC_API_KEY"] == POD_BOUND_KEY
    assert env_of(side)["OPENAI_API_KEY"] == "own-key"  # the app's own choice wins
    assert env_of(sidecar_of(patched))["LLMGATE_VIRTUAL_KEY"] == "team"
    unbound = pod()
    plain = apply(review(admission_review(unbound), OPTIONS), unbound)
    assert "OPENAI_API_KEY" not in env_of(plain["spec"]["containers"][0])
