"""Which replica works when several run with kopf peering: pure rules over the peering object.

kopf pauses a replica's watches while a live peer has a higher *or equal* priority, so
replicas must not share one: `start_priority` ranks them by start time (the oldest leads,
a new replica waits instead of taking over). The operator's own loops (resync, spend),
which kopf does not pause, ask `leads` with the peering object's status before writing.
Called by `handlers`; no kopf import, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

DEFAULT_LIFETIME = 60  # seconds; kopf's default keep-alive lifetime of a peer record


def start_priority(started: datetime) -> int:
    """A priority unique per replica that ranks the earliest started highest."""
    return -int(started.timestamp() * 1000)


def _alive(record: Mapping[str, Any], now: datetime) -> bool:
    try:
        seen = datetime.fromisoformat(str(record["lastseen"]))
        lifetime = int(record.get("lifetime", DEFAULT_LIFETIME))
    except (KeyError, ValueError, TypeError):
        return False
    if seen.tzinfo is None:
        seen = seen.replace(tzinfo=UTC)
    return seen + timedelta(seconds=lifetime) > now


def leads(status: Mapping[str, Any] | None, identity: str, priority: int, *,
          now: datetime) -> bool:
    """True when no live peer but `identity` has a priority >= `priority` (kopf's rule)."""
    for peer, record in (status or {}).items():
        if peer == identity or not isinstance(record, Mapping) or not _alive(record, now):
            continue
        try:
            theirs = int(record.get("priority", 0))
        except (TypeError, ValueError):
            theirs = 0
        if theirs >= priority:
            return False
    return True
