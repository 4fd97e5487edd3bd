"""Who is calling: a virtual key from the request headers, or the pod-bound key.

Keys are accepted from `Authorization: Bearer`, `api-key` or `x-api-key`, hashed with
SHA-256 and found by hash (constant-time compare). A pod bound to a VirtualKey by annotation
lets keyless requests from the loopback interface use that key's policy. Pure apart from the
clock passed in; the handlers call it once per request.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime

from llmgate_contract.config import POD_BOUND_KEY, VirtualKey

from llmgate_sidecar.config.runtime import Runtime
from llmgate_sidecar.errors import Forbidden, Unauthorized

LOOPBACK = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})


def presented_key(headers: Mapping[str, str]) -> str | None:
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    for name in ("api-key", "x-api-key"):
        other = headers.get(name)
        if other and other.strip():
            return other.strip()
    return None


def authenticate(runtime: Runtime, headers: Mapping[str, str], *, peer: str | None,
                 bound_key: str | None, now: datetime) -> VirtualKey:
    """The caller's VirtualKey, or Unauthorized with a message that says what is wrong."""
    key = presented_key(headers)
    if key == POD_BOUND_KEY and bound_key:
        key = None  # the injector's placeholder: the app holds no key of its own
    if key is None:
        if bound_key and peer in LOOPBACK:
            policy = runtime.keys_by_name.get(bound_key)
            if policy is None:
                raise Unauthorized(f"the pod is bound to VirtualKey {bound_key!r}, which is "
                                   f"not in the loaded config")
            _check_usable(policy, now)
            return policy
        raise Unauthorized("missing API key: send 'Authorization: Bearer <virtual key>'",
                           code="missing_api_key")
    # Keys are ASCII; a header with other bytes arrives with surrogate escapes that cannot
    # be hashed, and is simply not a key of ours.
    entry = runtime.find_key(hashlib.sha256(key.encode()).hexdigest()) if key.isascii() \
        else None
    if entry is None:
        raise Unauthorized("invalid API key")
    if entry.not_after is not None and now >= entry.not_after:
        raise Unauthorized("this key was rotated and its grace period is over",
                           code="key_rotated")
    _check_usable(entry.key, now, expires_at=entry.expires_at)
    return entry.key


def _check_usable(policy: VirtualKey, now: datetime,
                  expires_at: datetime | None = None) -> None:
    if policy.disabled:
        raise Unauthorized(f"VirtualKey {policy.name!r} is disabled", code="key_disabled")
    if expires_at is None and policy.expires_at:
        expires_at = datetime.fromisoformat(policy.expires_at.replace("Z", "+00:00"))
    if expires_at is not None and now >= expires_at:
        raise Unauthorized(f"VirtualKey {policy.name!r} expired at {policy.expires_at}",
                           code="key_expired")


def allows(policy: VirtualKey, public_model: str, route_model: str) -> bool:
    return not policy.models or public_model in policy.models or route_model in policy.models


def check_model(policy: VirtualKey, public_model: str, route_model: str) -> None:
    if not allows(policy, public_model, route_model):
        raise Forbidden(f"VirtualKey {policy.name!r} may not use model {public_model!r}")
