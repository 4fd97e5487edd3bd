"""Target ordering by strategy: pure `order()` over a target tree, seeded randomness.

These are the decisions a platform team configures: weights must hold over many requests,
adaptive strategies must follow the stats they read, and nested groups must keep their
place in the parent's order.
"""

from __future__ import annotations

import random
from collections import Counter
from decimal import Decimal

from llmgate_contract.config import Group, Target
from llmgate_sidecar.routing.strategies import EXPLORE, TargetStats, order


def t(name: str, weight: int = 1) -> Target:
    return Target(provider=name, model=f"{name}-model", weight=weight)


def firsts(group: Group, draws: int, seed: int = 42,
           stats: TargetStats | None = None) -> Counter[str]:
    rng, stats = random.Random(seed), stats or TargetStats()
    return Counter(order(group, stats, rng)[0].provider for _ in range(draws))


def test_loadbalance_converges_to_its_weights() -> None:
    group = Group(strategy="loadbalance", targets=[t("a", 1), t("b", 3), t("c", 6)])
    counts = firsts(group, 20_000)
    shares = {name: counts[name] / 20_000 for name in "abc"}
    assert abs(shares["a"] - 0.1) < 0.015
    assert abs(shares["b"] - 0.3) < 0.015
    assert abs(shares["c"] - 0.6) < 0.015


def test_loadbalance_keeps_every_target_as_a_fallback_and_weight_zero_last() -> None:
    group = Group(strategy="loadbalance", targets=[t("a", 0), t("b", 1), t("c", 1)])
    rng = random.Random(1)
    for _ in range(200):
        tried = [x.provider for x in order(group, TargetStats(), rng)]
        assert sorted(tried) == ["a", "b", "c"] and tried[-1] == "a"


def test_fallback_keeps_the_declared_order() -> None:
    group = Group(targets=[t("c"), t("a"), t("b")])
    assert [x.provider for x in order(group, TargetStats(), random.Random())] == ["c", "a", "b"]


def test_least_busy_picks_the_target_with_fewest_requests_in_flight() -> None:
    a, b, c = t("a"), t("b"), t("c")
    stats = TargetStats()
    for target, busy in ((a, 3), (b, 1), (c, 2)):
        for _ in range(busy):
            stats.started(target)
    group = Group(strategy="least-busy", targets=[a, b, c])
    assert [x.provider for x in order(group, stats, random.Random())] == ["b", "c", "a"]
    stats.finished(a, None)
    stats.finished(a, None)
    stats.finished(a, None)
    assert order(group, stats, random.Random())[0].provider == "a"


def test_latency_measures_unknown_targets_first_then_prefers_the_fastest() -> None:
    a, b, c = t("a"), t("b"), t("c")
    stats = TargetStats()
    stats.observe(a, 0.50)
    stats.observe(b, 0.05)
    group = Group(strategy="latency", targets=[a, b, c])
    assert firsts(group, 1_000, stats=stats)["c"] > 850  # never measured: tried first
    stats.observe(c, 0.20)
    counts = firsts(group, 10_000, stats=stats)
    # Mostly the fastest; the others are still explored now and then.
    assert abs(counts["b"] / 10_000 - (1 - EXPLORE)) < 0.02
    assert counts["a"] > 300 and counts["c"] > 300


def test_latency_follows_a_target_that_gets_slower() -> None:
    a, b = t("a"), t("b")
    stats = TargetStats()
    stats.observe(a, 0.05)
    stats.observe(b, 0.10)
    group = Group(strategy="latency", targets=[a, b])
    assert firsts(group, 1_000, stats=stats).most_common(1)[0][0] == "a"
    for _ in range(10):
        stats.observe(a, 1.0)  # a degrades; the moving average follows
    assert firsts(group, 1_000, stats=stats).most_common(1)[0][0] == "b"


def test_cost_orders_by_price_and_puts_unpriced_targets_last() -> None:
    prices = {"a": Decimal("12.5"), "b": Decimal("0.75"), "c": None, "d": Decimal("3")}
    group = Group(strategy="cost", targets=[t("a"), t("b"), t("c"), t("d")])
    tried = order(group, TargetStats(), random.Random(), lambda x: prices[x.provider])
    assert [x.provider for x in tried] == ["b", "d", "a", "c"]


def test_nested_groups_keep_their_place_and_apply_their_own_strategy() -> None:
    inner = Group(strategy="loadbalance", targets=[t("a", 1), t("b", 3)])
    group = Group(strategy="fallback", targets=[inner, t("c")])
    rng = random.Random(5)
    orders = [[x.provider for x in order(group, TargetStats(), rng)] for _ in range(4_000)]
    assert all(o[-1] == "c" and sorted(o[:2]) == ["a", "b"] for o in orders)
    share_b = sum(o[0] == "b" for o in orders) / len(orders)
    assert abs(share_b - 0.75) < 0.03


def test_an_adaptive_parent_ranks_a_nested_group_by_its_best_member() -> None:
    a, b, c = t("a"), t("b"), t("c")
    stats = TargetStats()
    for _ in range(2):
        stats.started(c)
    stats.started(a)
    group = Group(strategy="least-busy", targets=[c, Group(targets=[a, b])])
    # b is idle, so the group beats c even though its first member a is busy.
    assert [x.provider for x in order(group, stats, random.Random())] == ["a", "b", "c"]


def test_weighted_parent_splits_between_groups_by_group_weight() -> None:
    left = Group(weight=1, targets=[t("a")])
    right = Group(weight=4, targets=[t("b")])
    counts = firsts(Group(strategy="loadbalance", targets=[left, right]), 10_000)
    assert abs(counts["b"] / 10_000 - 0.8) < 0.02
