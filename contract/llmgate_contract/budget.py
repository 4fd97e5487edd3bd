"""Budget arithmetic and the Redis key layout that the sidecar writes and the operator reads.

The sidecar's stores (store.py, redis_store.py) book spend with these definitions; the
operator's spend poller reads it back with the same ones, so both sides agree on money
(integer micro-dollars), on period boundaries and on where a key's budget hash lives.
Pure functions only: no Redis client, no clock of its own (the Lua twin of `period_bounds`
lives in the sidecar's redis_scripts.py and must agree with it).
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal

MICROS_PER_USD = Decimal(1_000_000)

_PERIOD_MS = {"1h": 3_600_000, "1d": 86_400_000, "7d": 604_800_000, "30d": 2_592_000_000}
# 1970-01-05 was a Monday: weekly budgets start Monday 00:00 UTC, as people expect.
_WEEK_OFFSET_MS = 345_600_000

KEY_SUFFIXES = ("requests", "tokens", "leases", "tickets", "tombs", "budget")
"""Redis keys of one virtual key, in the sidecar scripts' KEYS order. `budget` is a hash with
fields `period`, `start` (ms), `spent` and `reserved` (micro-dollars); `spent` counts only
while `period` and `start` match the current period (see `spent_in_period`)."""


def usd_to_micros(amount: Decimal, *, round_up: bool = False) -> int:
    """Decimal USD -> integer micro-dollars (ceil for reservations, half-up for costs)."""
    mode = ROUND_CEILING if round_up else ROUND_HALF_UP
    return int((amount * MICROS_PER_USD).to_integral_value(rounding=mode))


def micros_to_usd(micros: int) -> Decimal:
    return Decimal(micros) / MICROS_PER_USD


def format_usd(micros: int) -> str:
    """Micro-dollars as a decimal string with at least two decimals: "0.00", "1.234567"."""
    text = f"{micros_to_usd(micros):.6f}".rstrip("0")
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.ljust(2, '0')}"


def period_bounds(period: str, now_ms: int) -> tuple[int, int | None]:
    """[start, end) in ms of the budget period containing now; end None for lifetime.

    Fixed periods (not rolling windows): every replica and the operator compute the same
    boundaries from the clock alone, status can show "spend since <start>", and one counter
    per key suffices. 1h/1d/30d count from the Unix epoch (UTC), 7d from Monday 00:00 UTC,
    calendar-month from the 1st 00:00 UTC. The Lua twin in redis_scripts.py must agree.
    """
    length = _PERIOD_MS.get(period)
    if length is not None:
        offset = _WEEK_OFFSET_MS if period == "7d" else 0
        start = now_ms - (now_ms - offset) % length
        return start, start + length
    if period == "calendar-month":
        day = datetime.fromtimestamp(now_ms // 1000, UTC)
        start_s = calendar.timegm((day.year, day.month, 1, 0, 0, 0))
        year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
        return start_s * 1000, calendar.timegm((year, month, 1, 0, 0, 0)) * 1000
    if period == "none":
        return 0, None
    raise ValueError(f"unknown budget period {period!r}")


def key_scope(namespace: str, name: str) -> str:
    """The store scope of VirtualKey `name` in `namespace`: `<namespace>/<name>`."""
    return f"{namespace}/{name}"


def _key(scope: str, suffix: str) -> str:
    # The hash tag `{<scope>}` puts every key of one scope in one Redis Cluster slot.
    return f"llmgate:{{{scope}}}:{suffix}"


def keys_for(scope: str) -> list[str]:
    """The six Redis keys of one scope, in KEY_SUFFIXES order (the scripts' KEYS)."""
    return [_key(scope, suffix) for suffix in KEY_SUFFIXES]


def budget_key(scope: str) -> str:
    """The budget hash of one scope (the last of `keys_for`)."""
    return _key(scope, "budget")


BUDGET_FIELDS = ("period", "start", "spent")
"""The budget hash fields `spent_in_period` reads, in its argument order (for HMGET)."""


def spent_in_period(fields: Sequence[str | None], period: str, now_ms: int) -> int:
    """Micro-dollars spent in the period of `now_ms`, from the BUDGET_FIELDS of a budget hash.

    A hash left from an earlier period (or another period length) counts as nothing spent:
    the sidecar resets `spent` lazily, on the first booking of a new period.
    """
    stored_period, start, spent = (list(fields) + [None] * 3)[:3]
    if stored_period != period or start is None or spent is None:
        return 0
    try:
        if int(start) != period_bounds(period, now_ms)[0]:
            return 0
        return max(0, int(spent))
    except ValueError:
        return 0
