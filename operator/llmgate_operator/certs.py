"""The webhook's TLS material: a private CA plus a serving certificate for its Service.

Pure (uses `cryptography`; kopf's own self-signed generation is broken with this OpenSSL):
`issue` makes the material, `needs_renewal` judges it, `to_secret_data`/`from_secret_data`
map it to and from Secret `llmgate-webhook-tls`. Called by the operator, which writes the
Secret, the files the server loads and the MWC `caBundle`; nothing here does I/O.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_KEY = "ca.crt"
CERT_KEY = "tls.crt"
KEY_KEY = "tls.key"
RENEW_BEFORE = timedelta(days=30)
# Backdate so a node whose clock runs a little behind still accepts a fresh certificate.
_CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class TlsMaterial:
    """PEM text of the CA certificate, the serving certificate and its private key."""

    ca_pem: str
    cert_pem: str
    key_pem: str


def dns_names(service: str, namespace: str) -> list[str]:
    """The names the API server may use to reach the webhook Service."""
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
            f"{service}.{namespace}.svc.cluster.local"]


def _general_name(host: str) -> x509.GeneralName:
    """An IP address SAN for a literal address (TLS clients match those only), else DNS."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return x509.DNSName(host)


def issue(service: str, namespace: str, *, now: datetime, days: int = 365,
          hosts: Sequence[str] = ()) -> TlsMaterial:
    """A new CA and a serving certificate for `<service>.<namespace>.svc` and any extra
    `hosts` (names or IP addresses of a URL-configured webhook), valid `days`."""
    if days <= 0:
        raise ValueError("days must be positive")
    now = _utc(now)
    not_before, not_after = now - _CLOCK_SKEW, now + timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"llmgate-webhook-ca.{namespace}")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = dns_names(service, namespace)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[2])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(n) for n in names] + [_general_name(h) for h in hosts]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return TlsMaterial(
        ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM).decode(),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).decode(),
    )


def needs_renewal(
    material: TlsMaterial,
    *,
    now: datetime,
    service: str | None = None,
    namespace: str | None = None,
    hosts: Sequence[str] = (),
) -> bool:
    """True if unusable, expiring within 30 days, or (given service/namespace, or `hosts`)
    not valid for those names.

    Unusable: unparsable, key not matching the certificate, or not issued by `ca_pem`.
    """
    now = _utc(now)
    try:
        ca = x509.load_pem_x509_certificate(material.ca_pem.encode())
        cert = x509.load_pem_x509_certificate(material.cert_pem.encode())
        key = serialization.load_pem_private_key(material.key_pem.encode(), password=None)
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return True
    if key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        return True
    for certificate in (ca, cert):
        if certificate.not_valid_after_utc - now < RENEW_BEFORE:
            return True
        if certificate.not_valid_before_utc > now:
            return True
    if service is not None and namespace is not None:
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return True
        if f"{service}.{namespace}.svc" not in san.get_values_for_type(x509.DNSName):
            return True
    if hosts:
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return True
        if any(_general_name(host) not in san for host in hosts):
            return True
    return False


def to_secret_data(material: TlsMaterial) -> dict[str, str]:
    """The Secret `data` (base64 values) holding `material`."""
    return {
        CA_KEY: _b64(material.ca_pem),
        CERT_KEY: _b64(material.cert_pem),
        KEY_KEY: _b64(material.key_pem),
    }


def from_secret_data(data: Mapping[str, str] | None) -> TlsMaterial | None:
    """`material` back from a Secret's `data`, or None if a key is missing or not base64."""
    if not data:
        return None
    try:
        values = [base64.b64decode(data[k], validate=True).decode() for k in
                  (CA_KEY, CERT_KEY, KEY_KEY)]
    except (KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        return None
    return TlsMaterial(ca_pem=values[0], cert_pem=values[1], key_pem=values[2])


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _utc(moment: datetime) -> datetime:
    # Naive datetimes are taken as UTC, as Kubernetes timestamps are.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
