"""Retry-After parsing: milliseconds, seconds and HTTP dates, as upstreams send them."""

from __future__ import annotations

from datetime import UTC, datetime

from llmgate_sidecar.upstream.providers.base import retry_after_seconds
from multidict import CIMultiDict

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)


def test_retry_after_ms_wins_over_seconds() -> None:
    headers = CIMultiDict({"retry-after-ms": "1500", "Retry-After": "9"})
    assert retry_after_seconds(headers, now=NOW) == 1.5


def test_retry_after_seconds_and_http_dates() -> None:
    assert retry_after_seconds(CIMultiDict({"Retry-After": "7"}), now=NOW) == 7.0
    date = CIMultiDict({"Retry-After": "Sun, 22 Nov 2026 12:00:30 GMT"})
    assert retry_after_seconds(date, now=NOW) == 30.0
    past = CIMultiDict({"Retry-After": "Sun, 22 Nov 2026 11:00:00 GMT"})
    assert retry_after_seconds(past, now=NOW) == 0.0


def test_garbage_retry_after_is_ignored() -> None:
    assert retry_after_seconds(CIMultiDict({"Retry-After": "soon"}), now=NOW) is None
    assert retry_after_seconds(CIMultiDict({"retry-after-ms": "x"}), now=NOW) is None
    assert retry_after_seconds(CIMultiDict(), now=NOW) is None
