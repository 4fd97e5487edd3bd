"""The webhook's TLS material: what the API server will check, renewal, and Secret round trip."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from llmgate_operator import certs
from llmgate_operator.certs import TlsMaterial

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def material() -> TlsMaterial:
    return certs.issue("llmgate-webhook", "llmgate-system", now=NOW)


def test_serving_cert_names_the_service_and_is_signed_by_the_ca(material: TlsMaterial) -> None:
    ca = x509.load_pem_x509_certificate(material.ca_pem.encode())
    cert = x509.load_pem_x509_certificate(material.cert_pem.encode())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [
        "llmgate-webhook", "llmgate-webhook.llmgate-system", "llmgate-webhook.llmgate-system.svc",
        "llmgate-webhook.llmgate-system.svc.cluster.local"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages
    assert cert.not_valid_after_utc == NOW + timedelta(days=365)
    assert cert.not_valid_before_utc < NOW, "backdated for clock skew"


def test_fresh_material_needs_no_renewal(material: TlsMaterial) -> None:
    assert not certs.needs_renewal(material, now=NOW)
    assert not certs.needs_renewal(material, now=NOW + timedelta(days=334))
    assert not certs.needs_renewal(material, now=NOW, service="llmgate-webhook",
                                   namespace="llmgate-system")


def test_renewal_within_30_days_of_expiry(material: TlsMaterial) -> None:
    assert certs.needs_renewal(material, now=NOW + timedelta(days=336))
    assert certs.needs_renewal(material, now=NOW + timedelta(days=400))


def test_naive_now_is_taken_as_utc(material: TlsMaterial) -> None:
    assert not certs.needs_renewal(material, now=NOW.replace(tzinfo=None))
    assert certs.needs_renewal(material, now=(NOW + timedelta(days=340)).replace(tzinfo=None))


def test_renewal_when_the_service_moved(material: TlsMaterial) -> None:
    assert certs.needs_renewal(material, now=NOW, service="llmgate-webhook", namespace="other")
    assert certs.needs_renewal(material, now=NOW, service="renamed", namespace="llmgate-system")


def test_unusable_material_needs_renewal(material: TlsMaterial) -> None:
    other = certs.issue("llmgate-webhook", "llmgate-system", now=NOW)
    broken = [
        TlsMaterial("", "", ""),
        TlsMaterial(material.ca_pem, "not a certificate", material.key_pem),
        TlsMaterial(material.ca_pem, material.cert_pem, "-----BEGIN PRIVATE KEY-----\nxx\n"),
        TlsMaterial(material.ca_pem, material.cert_pem, other.key_pem),   # key mismatch
        TlsMaterial(other.ca_pem, material.cert_pem, material.key_pem),   # wrong CA
    ]
    for candidate in broken:
        assert certs.needs_renewal(candidate, now=NOW), candidate


def test_secret_data_round_trip(material: TlsMaterial) -> None:
    data = certs.to_secret_data(material)
    assert sorted(data) == ["ca.crt", "tls.crt", "tls.key"]
    assert base64.b64decode(data["tls.crt"]).decode() == material.cert_pem
    assert base64.b64decode(data["ca.crt"]).startswith(b"-----BEGIN CERTIFICATE-----")
    assert certs.from_secret_data(data) == material


@pytest.mark.parametrize("data", [
    None, {}, {"ca.crt": "", "tls.crt": ""}, {"ca.crt": "!!", "tls.crt": "!!", "tls.key": "!!"},
    {"ca.crt": base64.b64encode(b"\xff\xfe").decode(), "tls.crt": "", "tls.key": ""},
], ids=["none", "empty", "missing-key", "not-base64", "not-utf8"])
def test_from_secret_data_rejects_unreadable_secrets(data: dict[str, str] | None) -> None:
    assert certs.from_secret_data(data) is None


def test_each_issue_makes_a_new_ca(material: TlsMaterial) -> None:
    again = certs.issue("llmgate-webhook", "llmgate-system", now=NOW)
    assert again.ca_pem != material.ca_pem
    assert again.key_pem != material.key_pem


def test_days_must_be_positive() -> None:
    with pytest.raises(ValueError, match="days"):
        certs.issue("s", "ns", now=NOW, days=0)


def test_url_hosts_become_ip_or_dns_names_and_renewal_follows_them() -> None:
    """A URL-configured webhook (`webhook.url`): the API server checks the URL's host."""
    import ipaddress

    both = certs.issue("llmgate-webhook", "llmgate-system", now=NOW,
                       hosts=["127.0.0.1", "webhook.example.com"])
    cert = x509.load_pem_x509_certificate(both.cert_pem.encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert "webhook.example.com" in san.get_values_for_type(x509.DNSName)
    assert not certs.needs_renewal(both, now=NOW, hosts=["127.0.0.1"])
    # Material issued for the Service only must be reissued once a URL host is configured.
    service_only = certs.issue("llmgate-webhook", "llmgate-system", now=NOW)
    assert certs.needs_renewal(service_only, now=NOW, hosts=["127.0.0.1"])
    assert certs.needs_renewal(both, now=NOW, hosts=["10.1.2.3"])
