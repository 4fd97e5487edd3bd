"""Last known good per CR: an invalid edit to a live CR keeps its previous valid version in
service (Ready False, InvalidSpec, a message naming the generation still served), and that
survives an operator restart because the last good spec is kept in `status.lastGood`.

The pure compile first, then the real operator (kopf) against the emulated API server."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from llmgate_operator.compile import compile_namespace
from llmgate_operator.handlers import OperatorRuntime
from llmgate_operator.render import desired_status, merge_diff, status_patch

from tests.operator import harness as h
from tests.operator.emulator import Emu
from tests.operator.test_operator import NS, apply_all, quickstart

# The operator's delay before a temporarily failed handler runs again.
RETRY_DELAY = OperatorRuntime.retry_seconds

NOW = datetime(2026, 3, 1, tzinfo=UTC)
MOCK = {"apiVersion": "llmgate.io/v1alpha1", "kind": "ProviderSecret",
        "metadata": {"name": "mock", "namespace": NS, "generation": 1},
        "spec": {"provider": "mock"}}


def route(strategy: str, generation: int, last_good: dict[str, Any] | None = None,
          ) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "llmgate.io/v1alpha1", "kind": "LLMRoute",
        "metadata": {"name": "chat", "namespace": NS, "generation": generation},
        "spec": {"strategy": strategy, "targets": [{"provider": "mock", "model": "m"}]}}
    if last_good is not None:
        body["status"] = {"lastGood": last_good}
    return body


def test_a_valid_spec_becomes_the_last_good_one() -> None:
    result = compile_namespace(NS, [MOCK, route("cost", 4)], {}, now=NOW)
    good = {"generation": 4, "spec": route("cost", 4)["spec"]}
    assert result.accepted[("LLMRoute", "chat")] == good
    status = desired_status(result, route("cost", 4), {}, now=NOW)
    assert status["lastGood"] == good


def test_an_invalid_edit_serves_the_last_good_spec() -> None:
    good = {"generation": 4, "spec": route("cost", 4)["spec"]}
    body = route("round-robin", 5, good)
    result = compile_namespace(NS, [MOCK, body], {}, now=NOW)
    [served] = result.config.routes
    assert served.name == "chat" and served.group.strategy == "cost"
    condition = result.conditions[("LLMRoute", "chat")]
    assert (condition.ready, condition.reason) == (False, "InvalidSpec")
    assert "spec.strategy" in condition.message
    assert condition.message.endswith("still serving generation 4, the last valid spec")
    assert condition.extra["servedGeneration"] == 4 and condition.extra["targets"]
    # The invalid spec never replaces the last good one.
    assert ("LLMRoute", "chat") not in result.accepted
    status = desired_status(result, body, {"lastGood": good}, now=NOW)
    patch = status_patch({"lastGood": good}, status)
    assert patch is not None and "lastGood" not in patch["status"]


def test_without_a_last_good_spec_an_invalid_cr_is_not_served() -> None:
    result = compile_namespace(NS, [MOCK, route("round-robin", 1)], {}, now=NOW)
    assert result.config.routes == []
    assert result.conditions[("LLMRoute", "chat")].reason == "InvalidSpec"


def test_an_edit_that_drops_needed_credentials_serves_the_last_good_provider() -> None:
    good = {"generation": 2, "spec": {"provider": "openai",
                                      "apiKey": {"secretKeyRef": {"name": "s", "key": "k"}}}}
    provider = {"apiVersion": "llmgate.io/v1alpha1", "kind": "ProviderSecret",
                "metadata": {"name": "oa", "namespace": NS, "generation": 3},
                "spec": {"provider": "openai"}, "status": {"lastGood": good}}
    result = compile_namespace(NS, [provider], {"s": {"k": "sk-1"}}, now=NOW)
    assert result.config.providers["oa"].api_key_file == "oa.api-key"
    condition = result.conditions[("ProviderSecret", "oa")]
    assert condition.reason == "InvalidSpec" and "needs spec.apiKey" in condition.message
    assert "still serving generation 2" in condition.message
    assert ("ProviderSecret", "oa") not in result.accepted


def test_a_last_good_spec_the_rules_no_longer_accept_is_not_served() -> None:
    body = route("round-robin", 5, {"generation": 4, "spec": {"strategy": "also-bad"}})
    result = compile_namespace(NS, [MOCK, body], {}, now=NOW)
    assert result.config.routes == []


def test_merge_diff_removes_what_went_away() -> None:
    before = {"generation": 1, "spec": {"cache": {"mode": "exact"}, "targets": [1, 2]}}
    after = {"generation": 2, "spec": {"targets": [1]}}
    patch = merge_diff(before, after)
    assert patch == {"generation": 2, "spec": {"cache": None, "targets": [1]}}
    applied = copy.deepcopy(before)
    applied["generation"], applied["spec"] = 2, {"targets": [1]}
    assert applied == after


# -- the real operator --------------------------------------------------------------------

def _strategy(k8s: Any) -> str | None:
    loaded = h.bundle(k8s, NS)
    found = [r for r in loaded.config.routes if r.name == "gpt-4o-mini"] if loaded else []
    return found[0].group.strategy if found else None


@pytest.mark.kmock(cls=Emu)
async def test_invalid_edit_keeps_the_route_served_across_an_operator_restart(k8s: Any) -> None:
    path = h.cr_path("LLMRoute", NS, "gpt-4o-mini")

    def last_good() -> int | None:
        cr = h.cr(k8s, "LLMRoute", NS, "gpt-4o-mini") or {}
        return ((cr.get("status") or {}).get("lastGood") or {}).get("generation")

    async with h.running_operator(k8s):
        await apply_all(k8s, quickstart())
        await h.eventually(lambda: _strategy(k8s) == "fallback", what="route served")
        first = await h.eventually(last_good, what="status.lastGood recorded")
        await h.patch(k8s, path, {"spec": {"strategy": "round-robin"}})
        # If the route's first handling met a provider not yet ready (all applied at once),
        # kopf holds its next handling until that retry is due (the operator's retry delay,
        # 30 s): the edit is judged then at the latest, so wait past that delay.
        condition = await h.eventually(
            lambda: (c := h.ready(k8s, "LLMRoute", NS, "gpt-4o-mini"))
            and c["reason"] == "InvalidSpec" and c, what="InvalidSpec reported",
            patience=RETRY_DELAY + h.PATIENCE)
        assert condition["status"] == "False"
        assert f"still serving generation {first}" in condition["message"]
        assert _strategy(k8s) == "fallback"          # the old version, never removed
        assert last_good() == first

    async with h.running_operator(k8s):                 # a restart keeps serving it
        await h.eventually(lambda: h.ready(k8s, "LLMRoute", NS, "gpt-4o-mini") is not None,
                           what="status after restart")
        assert _strategy(k8s) == "fallback"
        await h.patch(k8s, path, {"spec": {"strategy": "loadbalance"}})
        await h.eventually(lambda: _strategy(k8s) == "loadbalance", what="the fix served")
        fixed = await h.eventually(
            lambda: (c := h.ready(k8s, "LLMRoute", NS, "gpt-4o-mini"))
            and c["status"] == "True" and c, what="Ready again")
        assert fixed["reason"] == "Resolved"
        assert await h.eventually(lambda: (g := last_good()) and g > first and g,
                                  what="the fix is the new last good spec")
