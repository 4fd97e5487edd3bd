"""AWS Signature Version 4 for one request: the headers that sign it, nothing else.

Called by the Bedrock adapter when it builds a request. Written here rather than taken from
botocore because installing botocore downgrades python-dateutil below what the kubernetes
client requires; the algorithm is AWS's published one and is checked against AWS's own
example signature in the tests. Pure: the time is a parameter; credentials are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, unquote, urlsplit


@dataclass(frozen=True, slots=True)
class AwsCredentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def __repr__(self) -> str:
        return "AwsCredentials(<redacted>)"


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def canonical_query(query: str) -> str:
    pairs = []
    for item in query.split("&") if query else []:
        name, _, value = item.partition("=")
        pairs.append((quote(unquote(name), safe="-_.~"), quote(unquote(value), safe="-_.~")))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def sign(method: str, url: str, headers: Mapping[str, str], body: bytes, *,
         credentials: AwsCredentials, region: str, service: str,
         now: datetime) -> dict[str, str]:
    """`headers` plus `x-amz-date`, the session token (if any) and `authorization`.

    `url` is what goes on the wire, its path already percent-encoded."""
    parts = urlsplit(url)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    payload_hash = hashlib.sha256(body).hexdigest()
    signed = {k.lower(): " ".join(str(v).split()) for k, v in headers.items()}
    signed.update({"host": parts.netloc, "x-amz-date": amz_date})
    if credentials.session_token:
        signed["x-amz-security-token"] = credentials.session_token
    names = sorted(signed)
    # Non-S3 services sign the path URI-encoded once more (botocore does the same).
    canonical_uri = quote(parts.path or "/", safe="/~")
    canonical = "\n".join([
        method.upper(), canonical_uri, canonical_query(parts.query),
        "".join(f"{n}:{signed[n]}\n" for n in names), ";".join(names), payload_hash])
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(("AWS4" + credentials.secret_access_key).encode(), amz_date[:8])
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out = {**headers, "x-amz-date": amz_date}
    if credentials.session_token:
        out["x-amz-security-token"] = credentials.session_token
    out["authorization"] = (f"AWS4-HMAC-SHA256 Credential={credentials.access_key_id}/{scope}, "
                            f"SignedHeaders={';'.join(names)}, Signature={signature}")
    return out
