"""Virtual-key issuing and rotation decisions; pure (the caller does the writing).

`reconcile` asks `decide` whether a VirtualKey needs a new key, then writes the data from
`issued_data` / `rotated_data` to the key Secret. A Secret that already holds an `api-key`
is used as is (keys brought from a vault); only Secrets llmgate manages are ever rotated.
No Kubernetes client, no clock of its own: `now` is always passed in.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum

from llmgate_operator import api
from llmgate_operator.compile import (
    API_KEY_DATA_KEY,
    PREVIOUS_HASH_DATA_KEY,
    PREVIOUS_NOT_AFTER_DATA_KEY,
    key_sha256,
)

KEY_PREFIX = "lg-"
ROTATE_ANNOTATION = "llmgate.io/rotate"
GRACE_ANNOTATION = "llmgate.io/rotation-grace"
DEFAULT_GRACE = timedelta(hours=1)
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "llmgate"


@dataclass(frozen=True)
class SecretView:
    """What the operator keeps of a Secret: decoded data plus the metadata it decides on."""

    name: str
    data: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    uid: str | None = None
    resource_version: str | None = None

    @property
    def managed(self) -> bool:
        return self.labels.get(MANAGED_BY_LABEL) == MANAGED_BY


class Action(Enum):
    KEEP = "keep"
    ISSUE = "issue"
    ROTATE = "rotate"


@dataclass(frozen=True)
class Decision:
    action: Action
    why: str
    # A rotation that was asked for but refused; the caller reports it as an Event.
    refused: str | None = None


def generate_key() -> str:
    """A new virtual key: `lg-` + 256 bits of URL-safe randomness."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def decide(vk_annotations: Mapping[str, str], secret: SecretView | None) -> Decision:
    """Whether the key Secret of a VirtualKey must get a (new) key."""
    if secret is None:
        return Decision(Action.ISSUE, "the key Secret does not exist")
    if not secret.data.get(API_KEY_DATA_KEY, "").strip():
        return Decision(Action.ISSUE, f"the key Secret has no {API_KEY_DATA_KEY!r}")
    wanted = vk_annotations.get(ROTATE_ANNOTATION, "").strip()
    done = secret.annotations.get(ROTATE_ANNOTATION, "").strip()
    if not wanted or wanted == done:
        return Decision(Action.KEEP, "the key Secret holds a key")
    if not secret.managed:
        # Someone else (a vault sync, a person) owns this key; rewriting it would fight them.
        return Decision(Action.KEEP, "the key Secret is not managed by llmgate",
                        refused=f"rotation {wanted!r} requested but Secret {secret.name!r} is "
                                f"not managed by llmgate: rotate the key where it comes from")
    return Decision(Action.ROTATE, f"rotation {wanted!r} requested")


def rotation_grace(vk_annotations: Mapping[str, str]) -> tuple[timedelta, str | None]:
    """The grace period of the old key, and a warning when the annotation is unusable."""
    text = vk_annotations.get(GRACE_ANNOTATION, "").strip()
    if not text:
        return DEFAULT_GRACE, None
    try:
        return timedelta(seconds=api.parse_duration(text)), None
    except ValueError as exc:
        return DEFAULT_GRACE, f"{GRACE_ANNOTATION}: {exc}; using the default of 1h"


def issued_data(existing: Mapping[str, str] | None, key: str) -> dict[str, str]:
    """Data of a key Secret given its first key (other data keys of the Secret are kept)."""
    return {**dict(existing or {}), API_KEY_DATA_KEY: key}


def rotated_data(
    existing: Mapping[str, str], key: str, *, now: datetime, grace: timedelta
) -> dict[str, str]:
    """Data after a rotation: the new key, and the old key's hash valid until now + grace."""
    old = existing[API_KEY_DATA_KEY].strip()
    return {
        **dict(existing),
        API_KEY_DATA_KEY: key,
        PREVIOUS_HASH_DATA_KEY: key_sha256(old),
        PREVIOUS_NOT_AFTER_DATA_KEY: format_time(now + grace),
    }


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with a `Z`, second precision (what Kubernetes writes)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
