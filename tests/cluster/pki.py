"""Certificates and keys for the test control plane, made with `cryptography`.

`make_pki(directory)` writes a CA, the API server's serving certificate (for 127.0.0.1 and
the in-cluster names), client certificates for the admin and the controller manager, and
the service-account signing key pair; it returns their paths. Used by `controlplane`
only; no processes, no network.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_NAMES = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local")


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    admin_cert: Path
    admin_key: Path
    controller_manager_cert: Path
    controller_manager_key: Path
    service_account_key: Path
    service_account_pub: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _name(common: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _leaf(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, subject: x509.Name,
          usage: x509.ObjectIdentifier, now: datetime,
          san: list[x509.GeneralName] | None = None) -> tuple[x509.Certificate,
                                                                ec.EllipticCurvePrivateKey]:
    key = _key()
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(minutes=5))
               .not_valid_after(now + timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def make_pki(directory: Path) -> Pki:
    """Everything the control plane and its clients need, written into `directory`."""
    now = datetime.now(UTC)
    ca_key = _key()
    ca_name = _name("llmgate-test-cluster-ca")
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    san: list[x509.GeneralName] = [x509.DNSName(n) for n in SERVER_NAMES]
    san += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("10.0.0.1"))]
    server, server_key = _leaf(ca, ca_key, _name("kube-apiserver"),
                               ExtendedKeyUsageOID.SERVER_AUTH, now, san)
    admin, admin_key = _leaf(ca, ca_key, _name("llmgate-test-admin", "system:masters"),
                             ExtendedKeyUsageOID.CLIENT_AUTH, now)
    kcm, kcm_key = _leaf(ca, ca_key, _name("system:kube-controller-manager"),
                         ExtendedKeyUsageOID.CLIENT_AUTH, now)
    sa_key = _key()
    sa_pub = directory / "sa.pub"
    sa_pub.write_bytes(sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return Pki(
        ca_cert=_write_cert(ca, directory / "ca.crt"),
        ca_key=_write_key(ca_key, directory / "ca.key"),
        server_cert=_write_cert(server, directory / "apiserver.crt"),
        server_key=_write_key(server_key, directory / "apiserver.key"),
        admin_cert=_write_cert(admin, directory / "admin.crt"),
        admin_key=_write_key(admin_key, directory / "admin.key"),
        controller_manager_cert=_write_cert(kcm, directory / "kcm.crt"),
        controller_manager_key=_write_key(kcm_key, directory / "kcm.key"),
        service_account_key=_write_key(sa_key, directory / "sa.key"),
        service_account_pub=sa_pub,
    )
