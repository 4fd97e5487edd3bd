"""VirtualKey spend status (pure): `status.spend`, the BudgetExhausted condition, what is
kept or removed, and the shared budget arithmetic the operator reads Redis with."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from llmgate_contract.budget import budget_key, format_usd, key_scope, spent_in_period
from llmgate_operator import render
from llmgate_operator import settings as s
from llmgate_operator.compile import compile_namespace
from llmgate_operator.spend import Reading, budget_refs

NOW = datetime(2026, 3, 10, 12, 0, 0, tzinfo=UTC)
LATER = NOW + timedelta(seconds=30)
DAY_START_MS = int(datetime(2026, 3, 10, tzinfo=UTC).timestamp() * 1000)
SECRETS = {"vk-llmgate-key": {"api-key": "lg-abcdefgh"}}


def vk(spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "llmgate.io/v1alpha1", "kind": "VirtualKey",
                            "metadata": {"name": "vk", "namespace": "ns", "generation": 1},
                            "spec": spec}
    if status is not None:
        body["status"] = status
    return body


BUDGETED = vk({"budget": {"limit": "25.00", "period": "1d"}})


def status_of(body: dict[str, Any], current: dict[str, Any], reading: Reading | None,
              now: datetime = NOW) -> dict[str, Any]:
    compilation = compile_namespace("ns", [body], SECRETS, now=now)
    return render.desired_status(compilation, body, current, now=now,
                                 spend={"vk": reading} if reading else {})


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_spend_shows_amount_limit_and_period_as_decimal_strings_and_rfc3339() -> None:
    reading = Reading("1d", 1_234_567, DAY_START_MS, NOW)
    status = status_of(BUDGETED, {}, reading)
    assert status["spend"] == {"amount": "1.234567", "limit": "25.00",
                               "periodStart": "2026-03-10T00:00:00Z",
                               "updatedAt": "2026-03-10T12:00:00Z"}
    budget = conditions(status)["BudgetExhausted"]
    assert (budget["status"], budget["reason"]) == ("False", "WithinBudget")
    assert budget["message"] == ("spent $1.234567 of $25.00 since 2026-03-10T00:00:00Z "
                                 "(1d period)")
    assert budget["observedGeneration"] == 1
    assert conditions(status)["Ready"]["status"] == "True"  # an exhausted key is still valid


def test_budget_exhausted_at_the_limit_says_when_it_resets_and_keeps_its_time() -> None:
    first = status_of(BUDGETED, {}, Reading("1d", 25_000_000, DAY_START_MS, NOW))
    budget = conditions(first)["BudgetExhausted"]
    assert (budget["status"], budget["reason"]) == ("True", "BudgetExhausted")
    assert budget["message"].endswith("requests are refused until the period ends at "
                                      "2026-03-11T00:00:00Z")
    assert render.budget_flip({}, first) == budget  # worth a Warning Event

    more = status_of(BUDGETED, first, Reading("1d", 26_000_000, DAY_START_MS, LATER), LATER)
    again = conditions(more)["BudgetExhausted"]
    assert again["lastTransitionTime"] == budget["lastTransitionTime"]
    assert more["spend"]["amount"] == "26.00"
    assert more["spend"]["updatedAt"] == "2026-03-10T12:00:30Z"
    assert render.budget_flip(first, more) is None  # still exhausted: no second Event

    next_day = DAY_START_MS + 86_400_000
    reset = status_of(BUDGETED, more, Reading("1d", 0, next_day, LATER), LATER)
    assert reset["spend"]["amount"] == "0.00"
    assert reset["spend"]["periodStart"] == "2026-03-11T00:00:00Z"
    flip = render.budget_flip(more, reset)
    assert flip is not None and flip["reason"] == "WithinBudget"


def test_unchanged_spend_is_not_rewritten() -> None:
    first = status_of(BUDGETED, {}, Reading("1d", 500_000, DAY_START_MS, NOW))
    # The same value read again later (e.g. after an operator restart) changes nothing.
    again = status_of(BUDGETED, first, Reading("1d", 500_000, DAY_START_MS, LATER), LATER)
    assert again == first
    assert render.status_patch(first, again) is None


def test_without_a_reading_the_last_spend_status_is_kept() -> None:
    shown = status_of(BUDGETED, {}, Reading("1d", 25_000_000, DAY_START_MS, NOW))
    # Redis down, or the operator just restarted: nothing read yet.
    desired = status_of(BUDGETED, shown, None, LATER)
    assert "spend" not in desired
    assert conditions(desired)["BudgetExhausted"] == conditions(shown)["BudgetExhausted"]
    assert render.status_patch(shown, desired) is None


def test_a_reading_for_another_period_is_not_shown() -> None:
    shown = status_of(BUDGETED, {}, Reading("1d", 1_000_000, DAY_START_MS, NOW))
    weekly = vk({"budget": {"limit": "25.00", "period": "7d"}})
    desired = status_of(weekly, shown, Reading("1d", 2_000_000, DAY_START_MS, LATER), LATER)
    assert "spend" not in desired  # until the next poll reads the 7d period


def test_removing_the_budget_removes_spend_and_its_condition() -> None:
    shown = status_of(BUDGETED, {}, Reading("1d", 25_000_000, DAY_START_MS, NOW))
    unbudgeted = vk({})
    desired = status_of(unbudgeted, shown, None, LATER)
    patch = render.status_patch(shown, desired)
    assert patch is not None
    assert patch["status"]["spend"] is None  # merge patch: delete the field
    assert "BudgetExhausted" not in conditions(patch["status"])


def test_lifetime_budget_has_no_period_start() -> None:
    lifetime = vk({"budget": {"limit": "5", "period": "none"}})
    status = status_of(lifetime, {}, Reading("none", 5_000_000, None, NOW))
    assert status["spend"] == {"amount": "5.00", "limit": "5.00",
                               "updatedAt": "2026-03-10T12:00:00Z"}
    budget = conditions(status)["BudgetExhausted"]
    assert budget["status"] == "True"
    assert "lifetime budget" in budget["message"] and "limit is raised" in budget["message"]


def test_budget_refs_take_only_valid_budgeted_keys() -> None:
    bodies = [BUDGETED, {**vk({}), "metadata": {"name": "free", "namespace": "ns"}},
              {**vk({"budget": {"limit": "lots"}}), "metadata": {"name": "bad",
                                                                 "namespace": "ns"}}]
    refs = budget_refs(bodies)
    assert [(r.namespace, r.name, r.period) for r in refs] == [("ns", "vk", "1d")]


@pytest.mark.parametrize(("micros", "text"), [
    (0, "0.00"), (1, "0.000001"), (10_000, "0.01"), (1_500_000, "1.50"),
    (25_000_000, "25.00"), (123_456_789, "123.456789")])
def test_format_usd(micros: int, text: str) -> None:
    assert format_usd(micros) == text


def test_spent_in_period_counts_only_the_current_period() -> None:
    now = DAY_START_MS + 5_000
    assert spent_in_period(["1d", str(DAY_START_MS), "700"], "1d", now) == 700
    assert spent_in_period(["1d", str(DAY_START_MS - 86_400_000), "700"], "1d", now) == 0
    assert spent_in_period(["7d", str(DAY_START_MS), "700"], "1d", now) == 0
    assert spent_in_period([None, None, None], "1d", now) == 0  # never booked
    assert spent_in_period(["none", "0", "42"], "none", now) == 42
    assert budget_key(key_scope("team-a", "chat")) == "llmgate:{team-a/chat}:budget"


def test_spend_interval_flag_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    def parse(argv: list[str]) -> s.OperatorSettings:
        parser = argparse.ArgumentParser()
        s.add_arguments(parser)
        return s.from_args(parser.parse_args(argv))

    assert parse([]).spend_seconds == 30.0
    monkeypatch.setenv("LLMGATE_SPEND_SECONDS", "12")
    assert parse([]).spend_seconds == 12.0
    assert parse(["--spend-seconds", "0"]).spend_seconds == 1.0  # never a busy loop
