"""The webhook over real HTTPS: a `certs.issue` certificate, the server on 127.0.0.1, and a
client that checks the certificate the way the API server does (trusting only `ca.crt`,
connecting by the Service's DNS name)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from llmgate_operator import certs, webhook_server
from llmgate_operator.certs import TlsMaterial
from prometheus_client import CollectorRegistry

from tests.webhook.reviews import OPTIONS, admission_review, apply, pod, validate_pod

SERVICE, NAMESPACE = "llmgate-webhook", "llmgate-system"
SERVER_NAME = f"{SERVICE}.{NAMESPACE}.svc"


@dataclass
class Webhook:
    url: str
    ca_file: str
    registry: CollectorRegistry
    runner: aiohttp.web.AppRunner
    tmp: Path

    def count(self, result: str) -> float:
        value = self.registry.get_sample_value(
            "llmgate_operator_webhook_requests_total", {"result": result})
        return value or 0.0

    def timed(self) -> float:
        value = self.registry.get_sample_value("llmgate_operator_webhook_duration_seconds_count")
        return value or 0.0


def write(material: TlsMaterial, directory: Path) -> tuple[str, str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / "ca.crt", directory / "tls.crt", directory / "tls.key"]
    for path, text in zip(paths, (material.ca_pem, material.cert_pem, material.key_pem),
                          strict=True):
        path.write_text(text)
    return str(paths[0]), str(paths[1]), str(paths[2])


@pytest.fixture(scope="module")
def material() -> TlsMaterial:
    # Through the Secret representation, as the operator stores and reloads it.
    issued = certs.issue(SERVICE, NAMESPACE, now=datetime.now(UTC))
    stored = certs.from_secret_data(certs.to_secret_data(issued))
    assert stored is not None
    return stored


@pytest.fixture
async def hook(tmp_path: Path, material: TlsMaterial) -> AsyncIterator[Webhook]:
    ca_file, cert_file, key_file = write(material, tmp_path / "tls")
    registry = CollectorRegistry()
    runner = await webhook_server.start(OPTIONS, host="127.0.0.1", port=0, certfile=cert_file,
                                        keyfile=key_file, registry=registry,
                                        max_body_bytes=256 * 1024)
    port = webhook_server.bound_port(runner)
    try:
        yield Webhook(f"https://127.0.0.1:{port}/mutate-pods", ca_file, registry, runner,
                      tmp_path)
    finally:
        await runner.cleanup()


async def post(hook: Webhook, body: Any = None, *, ca_file: str | None = None,
               server_name: str = SERVER_NAME, **kw: Any) -> tuple[int, dict[str, Any]]:
    context = ssl.create_default_context(cafile=ca_file or hook.ca_file)
    async with aiohttp.ClientSession() as session, session.post(
        hook.url, json=body, ssl=context, server_hostname=server_name, **kw
    ) as response:
        return response.status, await response.json(content_type=None)


async def test_pod_is_injected_over_https(hook: Webhook) -> None:
    status, answer = await post(hook, admission_review(pod()))
    assert status == 200
    assert answer["response"]["allowed"] is True
    assert answer["response"]["uid"] == admission_review(pod())["request"]["uid"]
    patched = apply(answer, pod())
    validate_pod(patched)
    assert patched["spec"]["initContainers"][0]["name"] == "llmgate-sidecar"
    assert hook.count("injected") == 1
    assert hook.timed() == 1


async def test_skipped_pods_are_counted_as_skipped(hook: Webhook) -> None:
    opted_out = pod()
    opted_out["metadata"]["labels"]["llmgate.io/inject"] = "false"
    status, answer = await post(hook, admission_review(opted_out))
    assert status == 200
    assert "patch" not in answer["response"]
    assert (hook.count("skipped"), hook.count("injected")) == (1, 0)


async def test_bad_json_gets_an_admission_review_error_not_a_500(hook: Webhook) -> None:
    status, answer = await post(hook, data=b'{"apiVersion": ',
                                headers={"Content-Type": "application/json"})
    assert status == 400
    assert answer["kind"] == "AdmissionReview"
    assert "not valid JSON" in answer["response"]["status"]["message"]
    assert hook.count("error") == 1


async def test_wrong_content_type_is_refused(hook: Webhook) -> None:
    status, answer = await post(hook, data=b"<pod/>", headers={"Content-Type": "text/xml"})
    assert status == 400
    assert "application/json" in answer["response"]["status"]["message"]
    assert hook.count("error") == 1


async def test_malformed_review_is_refused_with_a_reason(hook: Webhook) -> None:
    status, answer = await post(hook, {"apiVersion": "admission.k8s.io/v1",
                                       "kind": "AdmissionReview"})
    assert status == 400
    assert answer["response"]["status"]["message"] == "the AdmissionReview has no request"


async def test_oversized_body_is_refused(hook: Webhook) -> None:
    huge = pod()
    huge["metadata"]["annotations"] = {"padding": "x" * (300 * 1024)}
    status, answer = await post(hook, admission_review(huge))
    assert status == 413
    assert answer["response"]["allowed"] is True
    assert hook.count("error") == 1


async def test_unreadable_pod_is_admitted_with_a_warning(hook: Webhook) -> None:
    status, answer = await post(hook, admission_review({"spec": {"containers": "app"}}))
    assert status == 200
    assert answer["response"]["allowed"] is True
    assert "not injected" in answer["response"]["warnings"][0]
    assert hook.count("error") == 1


async def test_a_client_trusting_another_ca_refuses_the_server(hook: Webhook) -> None:
    stranger = certs.issue(SERVICE, NAMESPACE, now=datetime.now(UTC))
    ca_file, _, _ = write(stranger, hook.tmp / "stranger")
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await post(hook, admission_review(pod()), ca_file=ca_file)
    assert hook.count("injected") == 0


async def test_the_certificate_is_only_good_for_the_service_name(hook: Webhook) -> None:
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await post(hook, admission_review(pod()), server_name="evil.example.com")
    status, _ = await post(hook, admission_review(pod()),
                           server_name=f"{SERVER_NAME}.cluster.local")
    assert status == 200


async def test_a_renewed_certificate_is_served_without_a_restart(hook: Webhook) -> None:
    renewed = certs.issue(SERVICE, NAMESPACE, now=datetime.now(UTC))
    ca_file, cert_file, key_file = write(renewed, hook.tmp / "renewed")
    old_ca = hook.ca_file
    webhook_server.reload_tls(hook.runner, cert_file, key_file)
    status, _ = await post(hook, admission_review(pod()), ca_file=ca_file)
    assert status == 200
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await post(hook, admission_review(pod()), ca_file=old_ca)


async def test_only_post_is_served(hook: Webhook) -> None:
    context = ssl.create_default_context(cafile=hook.ca_file)
    async with aiohttp.ClientSession() as session, session.get(
        hook.url, ssl=context, server_hostname=SERVER_NAME
    ) as response:
        assert response.status == 405


async def test_a_broken_renewal_keeps_the_old_certificate(hook: Webhook) -> None:
    other = certs.issue(SERVICE, NAMESPACE, now=datetime.now(UTC))
    _, cert_file, _ = write(other, hook.tmp / "other")
    _, _, key_file = write(certs.issue(SERVICE, NAMESPACE, now=datetime.now(UTC)),
                           hook.tmp / "mismatched")
    with pytest.raises(ssl.SSLError):
        webhook_server.reload_tls(hook.runner, cert_file, key_file)
    status, _ = await post(hook, admission_review(pod()))
    assert status == 200


async def test_clients_without_sni_also_get_the_renewed_certificate(hook: Webhook) -> None:
    renewed = certs.issue(SERVICE, NAMESPACE, now=datetime.now(UTC))
    ca_file, cert_file, key_file = write(renewed, hook.tmp / "renewed")
    webhook_server.reload_tls(hook.runner, cert_file, key_file)
    context = ssl.create_default_context(cafile=ca_file)
    context.check_hostname = False      # connecting by IP: no SNI is sent
    async with aiohttp.ClientSession() as session, session.post(
        hook.url, json=admission_review(pod()), ssl=context
    ) as response:
        assert response.status == 200
