"""A throwaway service-account key (fresh RSA key) whose token_uri points at a fake."""

from __future__ import annotations

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def service_account_key(token_uri: str) -> tuple[str, str]:
    """(service-account JSON as stored in the Secret, public key PEM to verify with)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    info = {"type": "service_account", "project_id": "acme", "private_key_id": "k1",
            "private_key": private_pem,
            "client_email": "llmgate@acme.iam.gserviceaccount.com", "client_id": "1",
            "token_uri": token_uri}
    return orjson.dumps(info).decode(), public_pem
