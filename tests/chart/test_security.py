"""The chart's security defaults: Redis requires a password that only Secrets carry, and
NetworkPolicies fence Redis, the webhook and the operator's ops port (docs/security.md)."""

from __future__ import annotations

import base64
import json
from typing import Any

from tests.chart import rendering as r

REDIS = {"redis": {"enabled": True}}


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env") or []}


def _redis_containers(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    deployment = r.find(docs, "Deployment", "gw-llmgate-redis")
    containers = list(deployment["spec"]["template"]["spec"]["containers"])
    assert len(containers) == 2
    return containers


def test_bundled_redis_requires_a_password_from_its_secret() -> None:
    docs = r.render(REDIS)
    secret = r.find(docs, "Secret", "gw-llmgate-redis")
    password = base64.b64decode(secret["data"]["password"]).decode()
    assert len(password) >= 32
    ref = {"secretKeyRef": {"name": "gw-llmgate-redis", "key": "password"}}
    for instance in _redis_containers(docs):  # the policy and the cache instance
        assert _env(instance)["REDISCLI_AUTH"]["valueFrom"] == ref
        assert instance["args"][:2] == ["--requirepass", "$(REDISCLI_AUTH)"]
    operator = r.operator_container(docs)
    assert _env(operator)["LLMGATE_REDIS_PASSWORD"]["valueFrom"] == ref
    # The password itself is in the Secret and nowhere else of the release.
    others = [d for d in docs if d is not secret]
    assert password not in json.dumps(others)
    assert secret["data"]["password"] not in json.dumps(others)


def test_external_redis_password_comes_from_the_named_secret() -> None:
    docs = r.render({"redis": {"url": "rediss://cache.example:6380/0",
                               "auth": {"existingSecret": "cache-auth", "secretKey": "pw"}}})
    operator = r.operator_container(docs)
    assert _env(operator)["LLMGATE_REDIS_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "cache-auth", "key": "pw"}}
    assert "--redis-url=rediss://cache.example:6380/0" in operator["args"]
    assert not [d for d in docs if d["kind"] == "Secret"]  # nothing generated for it


def test_auth_can_be_switched_off() -> None:
    docs = r.render({"redis": {"enabled": True, "auth": {"enabled": False}}})
    assert all("--requirepass" not in c["args"] for c in _redis_containers(docs))
    assert "LLMGATE_REDIS_PASSWORD" not in _env(r.operator_container(docs))
    assert not [d for d in docs if d["kind"] == "Secret"]


def test_network_policies_are_on_by_default() -> None:
    docs = r.render(REDIS)
    operator = r.find(docs, "NetworkPolicy", "gw-llmgate-operator")
    assert operator["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] \
        == "operator"
    assert operator["spec"]["policyTypes"] == ["Ingress"]
    webhook, ops = operator["spec"]["ingress"]
    assert webhook == {"ports": [{"port": "webhook", "protocol": "TCP"}]}  # the API server
    assert ops["ports"] == [{"port": "ops", "protocol": "TCP"}]
    assert ops["from"] == [{"podSelector": {}}]  # its own namespace only

    redis = r.find(docs, "NetworkPolicy", "gw-llmgate-redis")
    [rule] = redis["spec"]["ingress"]
    assert rule["ports"] == [{"port": "redis", "protocol": "TCP"},
                             {"port": "redis-cache", "protocol": "TCP"}]
    peers = rule["from"]
    assert peers[0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    # Pods opted in to the sidecar, by pod label or namespace label (the webhook's opt-ins).
    assert {"namespaceSelector": {}, "podSelector": {"matchLabels": {
        "llmgate.io/inject": "true"}}} in peers
    assert {"namespaceSelector": {"matchLabels": {"llmgate.io/inject": "enabled"}}} in peers


def test_ops_port_peers_and_switching_off() -> None:
    prometheus = {"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}
    docs = r.render({"networkPolicy": {"opsFrom": [prometheus]}})
    ops = r.find(docs, "NetworkPolicy", "gw-llmgate-operator")["spec"]["ingress"][1]
    assert ops["from"] == [{"podSelector": {}}, prometheus]
    assert "NetworkPolicy" not in r.kinds(r.render({"networkPolicy": {"enabled": False}}))
