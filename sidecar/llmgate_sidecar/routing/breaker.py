"""Per-target circuit breakers, shared by every request of the process.

Closed: failures inside `window` are counted; at `failures` the breaker opens and the target
is skipped for `cooldown`; then one request is let through (half-open) and its outcome closes
or re-opens the breaker. Only failures that say the target is unhealthy count (server error,
timeout, connection error, malformed payload, rejected credentials), not the caller's bad
request or a 429; a success clears the count. Routing calls `allow` before and `record`
after every attempt (and after a committed stream that fails mid-way).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from llmgate_contract.config import CircuitBreaker

UNHEALTHY = frozenset({"serverError", "timeout", "connectionError", "malformed", "auth"})


@dataclass
class _State:
    failures: deque[float] = field(default_factory=deque)
    open_until: float = 0.0
    probe_started: float = 0.0  # 0 = no probe in flight


class Breakers:
    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[str, str, bool], None] | None = None) -> None:
        self._clock = clock
        self._states: dict[tuple[str, str], _State] = {}
        self._on_change = on_change or (lambda provider, model, is_open: None)

    def allow(self, policy: CircuitBreaker | None, provider: str, model: str) -> bool:
        if policy is None:
            return True
        state = self._states.get((provider, model))
        if state is None or state.open_until == 0.0:
            return True
        now = self._clock()
        if now < state.open_until:
            return False
        # Half-open: one probe at a time; a probe that never reported (cancelled) expires.
        if state.probe_started and now - state.probe_started < policy.cooldown:
            return False
        state.probe_started = now
        return True

    def record(self, policy: CircuitBreaker | None, provider: str, model: str,
               error_class: str | None) -> None:
        if policy is None:
            return
        key = (provider, model)
        state = self._states.setdefault(key, _State())
        now = self._clock()
        if error_class is not None and error_class not in UNHEALTHY:
            # A 429 or a rejected request proves the target answers, but is no success:
            # it neither counts as a failure nor clears the ones counted, except that it
            # ends a half-open probe (the target is reachable again).
            if not state.probe_started:
                return
            error_class = None
        if error_class is None:
            if state.open_until:
                self._on_change(provider, model, False)
            state.failures.clear()
            state.open_until, state.probe_started = 0.0, 0.0
            return
        if state.probe_started:
            state.open_until, state.probe_started = now + policy.cooldown, 0.0
            return
        state.failures.append(now)
        while state.failures and state.failures[0] < now - policy.window:
            state.failures.popleft()
        if len(state.failures) >= policy.failures and not state.open_until:
            state.open_until = now + policy.cooldown
            state.failures.clear()
            self._on_change(provider, model, True)
