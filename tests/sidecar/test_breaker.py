"""Circuit breakers: the state machine on a fake clock, then the whole app skipping a target.

Unit tests drive `Breakers` directly; the component tests use the fault rig (real app, fake
upstreams, router time that moves only when told) and read the `llmgate_circuit_open` gauge
a dashboard would show.
"""

from __future__ import annotations

from typing import Any

from llmgate_contract.config import CircuitBreaker
from llmgate_sidecar.api.state import METRICS
from llmgate_sidecar.routing.breaker import Breakers

from tests.fakes.openai_upstream import Behaviour
from tests.sidecar.test_routing_faults import fakes, rig_factory  # noqa: F401 (fixtures)

POLICY = CircuitBreaker(failures=3, window=10.0, cooldown=5.0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make() -> tuple[Breakers, Clock, list[bool]]:
    clock, changes = Clock(), []
    breakers = Breakers(clock=clock, on_change=lambda p, m, is_open: changes.append(is_open))
    return breakers, clock, changes


def fail(b: Breakers, times: int, error_class: str = "serverError") -> None:
    for _ in range(times):
        b.record(POLICY, "p", "m", error_class)


def test_opens_after_n_failures_inside_the_window() -> None:
    b, _, changes = make()
    fail(b, 2)
    assert b.allow(POLICY, "p", "m")
    fail(b, 1)
    assert not b.allow(POLICY, "p", "m") and changes == [True]
    assert b.allow(POLICY, "p", "other-model")  # per target


def test_failures_spread_beyond_the_window_do_not_open_it() -> None:
    b, clock, changes = make()
    for _ in range(5):
        fail(b, 1)
        clock.now += 6  # two failures never fall inside one 10 s window with a third
    assert b.allow(POLICY, "p", "m") and changes == []


def test_success_clears_the_count_and_429_or_bad_request_neither_count_nor_clear() -> None:
    b, _, _ = make()
    fail(b, 2)
    fail(b, 5, "rateLimit")
    fail(b, 5, "badRequest")
    fail(b, 1)
    assert not b.allow(POLICY, "p", "m")  # 2 + 1 server errors: open
    b2, _, _ = make()
    fail(b2, 2)
    b2.record(POLICY, "p", "m", None)
    fail(b2, 2)
    assert b2.allow(POLICY, "p", "m")


def test_half_open_lets_one_probe_through_and_success_closes() -> None:
    b, clock, changes = make()
    fail(b, 3)
    clock.now += 4.9
    assert not b.allow(POLICY, "p", "m")
    clock.now += 0.2
    assert b.allow(POLICY, "p", "m")  # the probe
    assert not b.allow(POLICY, "p", "m")  # only one at a time
    b.record(POLICY, "p", "m", None)
    assert b.allow(POLICY, "p", "m") and b.allow(POLICY, "p", "m")
    assert changes == [True, False]


def test_a_failed_probe_reopens_for_another_cooldown() -> None:
    b, clock, changes = make()
    fail(b, 3)
    clock.now += 5
    assert b.allow(POLICY, "p", "m")
    fail(b, 1, "timeout")
    assert not b.allow(POLICY, "p", "m")
    clock.now += 5
    assert b.allow(POLICY, "p", "m")
    b.record(POLICY, "p", "m", "rateLimit")  # it answered: reachable again
    assert b.allow(POLICY, "p", "m") and changes == [True, False]


def test_a_probe_that_never_reports_expires_after_a_cooldown() -> None:
    b, clock, _ = make()
    fail(b, 3)
    clock.now += 5
    assert b.allow(POLICY, "p", "m")  # probe taken, its request then cancelled
    assert not b.allow(POLICY, "p", "m")
    clock.now += 5
    assert b.allow(POLICY, "p", "m")


def test_no_policy_means_no_breaker() -> None:
    b, _, _ = make()
    for _ in range(50):
        b.record(None, "p", "m", "serverError")
    assert b.allow(None, "p", "m")


BREAKER = {"circuitBreaker": {"failures": 2, "window": "30s", "cooldown": "10s"}}


def gauge(rig: Any) -> float:
    value: float = rig.app[METRICS].circuit_open.labels("primary", "up-1")._value.get()
    return value


async def test_open_breaker_skips_the_target_then_a_probe_recovers_it(
        rig_factory: Any) -> None:  # noqa: F811
    rig = await rig_factory(**BREAKER)
    rig.primary.default = Behaviour(kind="status", status=500)
    for _ in range(2):
        status, headers, _ = await rig.ask()
        assert status == 200 and headers["x-llmgate-attempts"] == "2"
    assert gauge(rig) == 1
    status, headers, _ = await rig.ask()
    # Skipped without an attempt: the backup answers on the first try.
    assert status == 200 and headers["x-llmgate-provider"] == "backup"
    assert headers["x-llmgate-attempts"] == "1" and len(rig.primary.requests) == 2
    assert rig.app[METRICS].fallbacks.labels("chat", "circuitOpen")._value.get() == 1
    rig.time.now += 10  # cooldown over; the target has healed meanwhile
    rig.primary.default = Behaviour()
    status, headers, _ = await rig.ask()
    assert status == 200 and headers["x-llmgate-provider"] == "primary"
    assert gauge(rig) == 0
    status, headers, _ = await rig.ask()
    assert headers["x-llmgate-provider"] == "primary"


async def test_a_stream_that_dies_mid_way_counts_as_a_failure(rig_factory: Any) -> None:  # noqa: F811
    rig = await rig_factory(circuitBreaker={"failures": 1, "window": "30s", "cooldown": "1m"})
    rig.primary.script.append(Behaviour(kind="cut", chunks_before=2))
    status, headers, text = await rig.ask(stream=True)
    assert status == 200 and headers["x-llmgate-provider"] == "primary"
    assert '"code":"connectionError"' in text
    assert gauge(rig) == 1
    status, headers, _ = await rig.ask()
    assert headers["x-llmgate-provider"] == "backup"


async def test_all_targets_open_gives_503_without_calling_anyone(rig_factory: Any) -> None:  # noqa: F811
    rig = await rig_factory(circuitBreaker={"failures": 1, "window": "30s", "cooldown": "1m"})
    rig.primary.script.append(Behaviour(kind="status", status=500))
    rig.backup.script.append(Behaviour(kind="status", status=500))
    status, _, _ = await rig.ask()
    assert status == 502
    status, _, body = await rig.ask()
    assert status == 503 and "circuitOpen" in body["error"]["message"]
    assert len(rig.primary.requests) == len(rig.backup.requests) == 1
