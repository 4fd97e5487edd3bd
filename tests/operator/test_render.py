"""Rendering (pure): config objects, minimal patches, kstatus conditions, key Secrets."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

from llmgate_contract import bundle_files, read_bundle
from llmgate_operator import render
from llmgate_operator.compile import compile_namespace

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)
API = "llmgate.io/v1alpha1"


def cr(kind: str, name: str, spec: dict[str, Any], generation: int = 1,
       status: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": API, "kind": kind, "spec": spec,
                            "metadata": {"name": name, "namespace": "ns",
                                         "generation": generation, "uid": f"uid-{name}"}}
    if status is not None:
        body["status"] = status
    return body


PROVIDER = cr("ProviderSecret", "oa", {"provider": "openai", "apiKey": {
    "secretKeyRef": {"name": "creds", "key": "k"}}})
ROUTE = cr("LLMRoute", "chat", {"targets": [{"provider": "oa", "model": "gpt-4o"},
                                            {"provider": "gone", "model": "x"}]})
KEY = cr("VirtualKey", "vk", {"expiresAt": "2026-03-01T12:03:00Z"})
SECRETS = {"creds": {"k": "sk-1"}, "vk-llmgate-key": {"api-key": "lg-abcdefgh"}}


def compiled(now: datetime = NOW) -> Any:
    return compile_namespace("ns", [PROVIDER, ROUTE, KEY], SECRETS, now=now)


def decode(data: dict[str, str]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def test_config_objects_carry_the_bundle_and_load_as_the_sidecar_does() -> None:
    compilation = compiled()
    configmap, secret = render.config_objects(compilation)
    want_cm, want_secret = bundle_files(compilation.config, compilation.credentials)
    assert configmap["metadata"]["name"] == "llmgate-config"
    assert secret["metadata"]["name"] == "llmgate-credentials"
    assert configmap["data"] == want_cm
    assert decode(secret["data"]) == want_secret
    assert "stringData" not in secret
    for obj in (configmap, secret):
        assert obj["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "llmgate"}
        assert obj["metadata"]["annotations"] == {
            "llmgate.io/generation": compilation.config.generation}
    loaded = read_bundle(configmap["data"], decode(secret["data"]))
    assert loaded.credentials == {"oa.api-key": "sk-1"}


def test_object_patch_is_none_when_equal_and_minimal_otherwise() -> None:
    configmap, _ = render.config_objects(compiled())
    live = {**configmap, "metadata": {**configmap["metadata"], "resourceVersion": "7",
                                      "labels": {**configmap["metadata"]["labels"],
                                                 "team": "a"}}}
    assert render.object_patch(live, configmap) is None  # foreign labels are left alone

    stale = {**live, "data": {"config.json": "{}", "generation": "x", "old.file": "1"}}
    patch = render.object_patch(stale, configmap)
    assert patch == {"data": {"old.file": None, **configmap["data"]}}


def test_ready_condition_time_moves_only_when_status_or_reason_changes() -> None:
    first = render.desired_status(compiled(), ROUTE, {}, now=NOW)
    ready = first["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False",
                                                                 "ProviderNotReady")
    assert ready["lastTransitionTime"] == "2026-03-01T12:00:00Z"
    assert ready["observedGeneration"] == 1 and first["observedGeneration"] == 1

    again = render.desired_status(compiled(), ROUTE, first, now=LATER)
    assert again == first
    assert render.status_patch(first, again) is None

    fixed = compile_namespace("ns", [PROVIDER, cr("LLMRoute", "chat", {"targets": [
        {"provider": "oa", "model": "gpt-4o"}]}, generation=2)], SECRETS, now=LATER)
    route2 = cr("LLMRoute", "chat", {}, generation=2)
    changed = render.desired_status(fixed, route2, first, now=LATER)
    assert changed["conditions"][0]["reason"] == "Resolved"
    assert changed["conditions"][0]["lastTransitionTime"] == "2026-03-01T12:05:00Z"
    assert changed["observedGeneration"] == 2
    assert render.ready_changed(first, changed)


def test_route_status_reports_each_target_and_keeps_foreign_conditions() -> None:
    foreign = {"type": "Synced", "status": "True", "reason": "ByArgo", "message": ""}
    status = render.desired_status(compiled(), ROUTE, {"conditions": [foreign]}, now=NOW)
    assert status["targets"] == [
        {"provider": "oa", "model": "gpt-4o", "resolved": True},
        {"provider": "gone", "model": "x", "resolved": False}]
    assert foreign in status["conditions"]


def test_virtual_key_status_has_prefix_and_expired_condition() -> None:
    before = render.desired_status(compiled(NOW), KEY, {}, now=NOW)
    assert before["keyPrefix"] == "lg-abcd"
    assert before["secretName"] == "vk-llmgate-key"
    expired = {c["type"]: c for c in before["conditions"]}["Expired"]
    assert expired["status"] == "False"

    after = render.desired_status(compiled(LATER), KEY, before, now=LATER)
    conds = {c["type"]: c for c in after["conditions"]}
    assert conds["Expired"]["status"] == "True"
    assert conds["Ready"]["status"] == "False" and conds["Ready"]["reason"] == "Expired"
    assert render.ready_changed(before, after)


def test_status_fields_that_no_longer_apply_are_removed() -> None:
    invalid = cr("VirtualKey", "vk", {"budget": {"limit": "lots"}}, generation=2)
    compilation = compile_namespace("ns", [invalid], SECRETS, now=NOW)
    current = {"keyPrefix": "lg-abcd", "conditions": []}
    desired = render.desired_status(compilation, invalid, current, now=NOW)
    patch = render.status_patch(current, desired)
    assert patch is not None
    assert patch["status"]["keyPrefix"] is None
    assert patch["status"]["conditions"][0]["reason"] == "InvalidSpec"


def test_key_secret_is_owned_by_its_virtual_key_only_when_adopted() -> None:
    owned = render.key_secret(KEY, "vk-llmgate-key", {"api-key": "lg-1"}, rotation="r1",
                              adopt=True)
    assert decode(owned["data"]) == {"api-key": "lg-1"}
    assert owned["metadata"]["annotations"] == {"llmgate.io/rotate": "r1"}
    assert owned["metadata"]["labels"]["llmgate.io/virtual-key"] == "vk"
    (owner,) = owned["metadata"]["ownerReferences"]
    assert owner == {"apiVersion": API, "kind": "VirtualKey", "name": "vk", "uid": "uid-vk",
                     "controller": True, "blockOwnerDeletion": True}
    foreign = render.key_secret(KEY, "vault", {"api-key": "x"}, rotation=None, adopt=False)
    assert "ownerReferences" not in foreign["metadata"]
    assert "app.kubernetes.io/managed-by" not in foreign["metadata"]["labels"]
    assert "annotations" not in foreign["metadata"]


def test_decode_data_skips_binary_values() -> None:
    data = {"text": base64.b64encode(b"hello").decode(),
            "binary": base64.b64encode(b"\xff\xfe").decode(), "broken": "***"}
    assert render.decode_data(data) == {"text": "hello"}


def test_secret_header_values_go_to_the_credentials_secret_never_the_configmap() -> None:
    provider = cr("ProviderSecret", "oa", {
        "provider": "openai", "apiKey": {"secretKeyRef": {"name": "creds", "key": "k"}},
        "headers": {"X-Team": "blue"},
        "secretHeaders": {"X-Api-Key": {"secretKeyRef": {"name": "hdr", "key": "v"}}}})
    compilation = compile_namespace("ns", [provider, ROUTE, KEY],
                                    {**SECRETS, "hdr": {"v": "hv-secret-42"}}, now=NOW)
    assert compilation.conditions[("ProviderSecret", "oa")].ready
    configmap, secret = render.config_objects(compilation)
    assert "hv-secret-42" not in str(configmap)
    loaded = read_bundle(configmap["data"], decode(secret["data"]))
    assert loaded.credentials["oa.header.x-api-key"] == "hv-secret-42"
    oa = loaded.config.providers["oa"]
    assert (oa.headers, oa.header_files) == ({"X-Team": "blue"},
                                             {"X-Api-Key": "oa.header.x-api-key"})
    assert loaded.schema_version == 2     # a first-release sidecar cannot send it: refuses


def test_a_missing_secret_header_secret_or_key_makes_the_provider_not_ready() -> None:
    ref = {"X-Api-Key": {"secretKeyRef": {"name": "hdr", "key": "v"}}}
    provider = cr("ProviderSecret", "oa", {
        "provider": "openai", "apiKey": {"secretKeyRef": {"name": "creds", "key": "k"}},
        "secretHeaders": ref})
    for secrets, reason in ((SECRETS, "SecretNotFound"),
                            ({**SECRETS, "hdr": {"other": "x"}}, "SecretKeyNotFound")):
        compilation = compile_namespace("ns", [provider, ROUTE, KEY], secrets, now=NOW)
        condition = compilation.conditions[("ProviderSecret", "oa")]
        assert (condition.ready, condition.reason) == (False, reason)
        assert "hdr" in condition.message
        assert "oa" not in compilation.config.providers


def test_secret_header_names_are_checked() -> None:
    for headers, secret_headers in (({}, {"X Key": {}}), ({"x-key": "a"}, {"X-Key": {}}),
                                    ({}, {"X-Key": {}, "x-key": {}})):
        refs = {h: {"secretKeyRef": {"name": "hdr", "key": "v"}} for h in secret_headers}
        provider = cr("ProviderSecret", "oa", {"provider": "mock", "headers": headers,
                                               "secretHeaders": refs})
        compilation = compile_namespace("ns", [provider], {"hdr": {"v": "x"}}, now=NOW)
        condition = compilation.conditions[("ProviderSecret", "oa")]
        assert (condition.ready, condition.reason) == (False, "InvalidSpec")
        assert "secretHeaders" in condition.message
