"""`llmgate operator` wiring: flags/env into settings, and the webhook started by `serve`
with its certificate kept in a Secret and published as the MWC's caBundle."""

from __future__ import annotations

import argparse
import base64
import json
import ssl
from typing import Any

import aiohttp
import pytest
from llmgate_operator import settings as s
from llmgate_operator.main import run

from tests.conftest import free_port
from tests.operator import harness as h
from tests.operator.emulator import Emu

MWC = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
       "metadata": {"name": "llmgate-sidecar-injector"},
       "webhooks": [{"name": "pods.llmgate.io", "sideEffects": "None",
                     "admissionReviewVersions": ["v1"],
                     "clientConfig": {"service": {"name": "llmgate-webhook",
                                                  "namespace": "llmgate-system",
                                                  "path": "/mutate-pods"}}}]}
MWC_PATH = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"


def parse(argv: list[str]) -> s.OperatorSettings:
    parser = argparse.ArgumentParser()
    s.add_arguments(parser)
    return s.from_args(parser.parse_args(argv))


def test_flags_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMGATE_WATCH_NAMESPACES", "a, b,,a")
    monkeypatch.setenv("LLMGATE_WEBHOOK_PORT", "10443")
    monkeypatch.setenv("LLMGATE_NO_WEBHOOK", "true")
    monkeypatch.setenv("POD_NAMESPACE", "llmgate-system")
    monkeypatch.setenv("LLMGATE_SIDECAR_RESOURCES", '{"requests": {"cpu": "10m"}}')
    monkeypatch.setenv("LLMGATE_OPS_HOST", "10.1.2.3")
    from_env = parse([])
    assert from_env.ops_host == "10.1.2.3"
    assert from_env.namespaces == ("a", "b")
    assert from_env.webhook_port == 10443
    assert not from_env.webhook_enabled
    assert from_env.webhook_namespace == "llmgate-system"
    assert from_env.sidecar_resources == {"requests": {"cpu": "10m"}}
    assert not from_env.clusterwide

    flags = parse(["--namespace", "x", "--namespace", "y", "--ops-port", "9000",
                   "--log-level", "debug", "--tls-dir", "/certs", "--ops-host", "127.0.0.1"])
    assert flags.namespaces == ("x", "y")  # flags win over the environment
    assert flags.ops_host == "127.0.0.1"
    assert (flags.ops_port, flags.log_level, flags.tls_dir) == (9000, "DEBUG", "/certs")


def test_defaults_match_the_documented_interface(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LLMGATE_WATCH_NAMESPACES", "LLMGATE_WEBHOOK_PORT", "LLMGATE_NO_WEBHOOK",
                 "POD_NAMESPACE", "LLMGATE_OPS_PORT", "LLMGATE_TLS_SECRET",
                 "LLMGATE_OPS_HOST"):
        monkeypatch.delenv(name, raising=False)
    defaults = parse([])
    assert defaults.clusterwide and defaults.webhook_enabled
    assert (defaults.webhook_port, defaults.ops_port) == (9443, 9464)
    assert defaults.ops_host == "0.0.0.0"
    assert defaults.webhook_service == "llmgate-webhook"
    assert defaults.webhook_config_name == "llmgate-sidecar-injector"
    assert defaults.tls_secret == "llmgate-webhook-tls"


def test_bad_sidecar_resources_are_refused() -> None:
    with pytest.raises(ValueError, match="not JSON"):
        s.parse_resources("{cpu")
    with pytest.raises(ValueError, match="ResourceRequirements"):
        s.parse_resources('{"cpu": "1"}')


def _review(pod: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "resource": {"group": "", "version": "v1", "resource": "pods"},
                        "operation": "CREATE", "namespace": "apps",
                        "userInfo": {"username": "test"}, "object": pod}}


@pytest.mark.kmock(cls=Emu)
async def test_webhook_certificate_secret_ca_bundle_and_injection(k8s: Any) -> None:
    async with k8s.post(MWC_PATH, json=MWC) as response:
        assert response.status < 300
    port = free_port()
    options = {"webhook_enabled": True, "webhook_namespace": "llmgate-system",
               "webhook_host": "127.0.0.1", "webhook_port": port,
               "sidecar_image": "example.org/llmgate-sidecar:test"}
    async with h.running_operator(k8s, **options):
        tls = h.stored(k8s, "v1/secrets", "llmgate-system", "llmgate-webhook-tls")
        assert tls is not None and set(tls["data"]) == {"ca.crt", "tls.crt", "tls.key"}
        ca_pem = base64.b64decode(tls["data"]["ca.crt"]).decode()
        mwc = h.stored(k8s, "admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
                       None, "llmgate-sidecar-injector")
        assert mwc is not None
        assert mwc["webhooks"][0]["clientConfig"]["caBundle"] == tls["data"]["ca.crt"]

        context = ssl.create_default_context(cadata=ca_pem)
        pod = {"metadata": {"name": "app", "labels": {"llmgate.io/inject": "true"}},
               "spec": {"containers": [{"name": "app", "image": "app:1"}]}}
        async with aiohttp.ClientSession() as session, session.post(
                f"https://127.0.0.1:{port}/mutate-pods", json=_review(pod), ssl=context,
                server_hostname="llmgate-webhook.llmgate-system.svc") as response:
            assert response.status == 200
            answer = await response.json()
        assert answer["response"]["allowed"] is True
        ops = json.loads(base64.b64decode(answer["response"]["patch"]))
        containers = next(op["value"] for op in ops if op["path"] == "/spec/containers")
        # The emulator reports Kubernetes 1.26: no native sidecars, a regular container.
        sidecar = next(c for c in containers if c["name"] == "llmgate-sidecar")
        assert sidecar["image"] == "example.org/llmgate-sidecar:test"

    # A restart (or a second replica) reuses the stored certificate instead of a new CA.
    async with h.running_operator(k8s, **(options | {"webhook_port": free_port()})):
        await h.create(k8s, "apps", {"apiVersion": "llmgate.io/v1alpha1", "kind": "VirtualKey",
                                     "metadata": {"name": "k"}, "spec": {}})
        await h.eventually(lambda: h.ready(k8s, "VirtualKey", "apps", "k"),
                           what="the restarted operator at work")
        again = h.stored(k8s, "v1/secrets", "llmgate-system", "llmgate-webhook-tls")
        assert again is not None and again["data"] == tls["data"]


def test_without_a_cluster_the_operator_exits_1_with_a_reason(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    settings = s.OperatorSettings(webhook_enabled=False, ops_port=free_port())
    assert run(settings) == 1
    assert "kubeconfig" in caplog.text
