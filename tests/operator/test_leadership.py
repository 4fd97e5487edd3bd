"""Which replica leads under kopf peering (`llmgate_operator.peering`): pure rules.

kopf pauses every replica that sees a live peer of higher *or equal* priority; the real
control plane showed two chart replicas with kopf's default priority (0) both pausing, so
nothing was reconciled. These rules give each replica its own priority and tell the
operator's own loops (resync, spend) whether this replica is the one that works.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from llmgate_operator.peering import leads, start_priority

NOW = datetime(2026, 12, 7, 7, 0, tzinfo=UTC)


def _peer(priority: int, seen: datetime = NOW, lifetime: int = 60) -> dict[str, object]:
    return {"priority": priority, "lastseen": seen.isoformat(), "lifetime": lifetime}


def test_the_earliest_started_replica_has_the_highest_priority() -> None:
    first, second = start_priority(NOW), start_priority(NOW + timedelta(milliseconds=1))
    assert first > second


def test_alone_or_without_peering_object_status_this_replica_leads() -> None:
    assert leads(None, "me", 5, now=NOW)
    assert leads({"me": _peer(5)}, "me", 5, now=NOW)


def test_a_live_peer_with_higher_or_equal_priority_leads_instead() -> None:
    assert not leads({"me": _peer(5), "other": _peer(6)}, "me", 5, now=NOW)
    assert not leads({"me": _peer(5), "other": _peer(5)}, "me", 5, now=NOW)
    assert leads({"me": _peer(5), "other": _peer(4)}, "me", 5, now=NOW)


def test_a_dead_or_unreadable_peer_does_not_count() -> None:
    stale = _peer(9, seen=NOW - timedelta(seconds=61))
    assert leads({"me": _peer(5), "gone": stale}, "me", 5, now=NOW)
    assert leads({"me": _peer(5), "junk": {"priority": 9}}, "me", 5, now=NOW)
    assert leads({"me": _peer(5), "junk": "not a record"}, "me", 5, now=NOW)
