"""Target selection: turn a route's target tree into the order in which targets are tried.

Pure functions over the tree plus a `TargetStats` snapshot (in-flight counts, latency
averages) and an injected random source, so every strategy is testable without I/O.
`fallback` keeps the declared order; `loadbalance` draws by weight without replacement (the
rest stay as fallbacks); `least-busy` sorts by in-flight requests; `latency` sorts by recent
latency but explores a random target with probability `EXPLORE`; `cost` sorts by price.
Nested groups are ordered by the same rules and flattened in place.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from llmgate_contract.config import Group, Target

EXPLORE = 0.1
LATENCY_DECAY = 0.2


@dataclass
class TargetStats:
    """Process-wide, per (provider, model): what the adaptive strategies read."""

    in_flight: dict[tuple[str, str], int] = field(default_factory=dict)
    latency: dict[tuple[str, str], float] = field(default_factory=dict)

    def started(self, target: Target) -> None:
        key = (target.provider, target.model)
        self.in_flight[key] = self.in_flight.get(key, 0) + 1

    def finished(self, target: Target, seconds: float | None) -> None:
        """The request to `target` is over; `seconds` is its latency if it succeeded."""
        key = (target.provider, target.model)
        self.in_flight[key] = max(0, self.in_flight.get(key, 0) - 1)
        if seconds is not None:
            self.observe(target, seconds)

    def observe(self, target: Target, seconds: float | None) -> None:
        """Fold one latency sample into the target's moving average."""
        if seconds is None:
            return
        key = (target.provider, target.model)
        old = self.latency.get(key)
        self.latency[key] = seconds if old is None else old + LATENCY_DECAY * (seconds - old)


PriceOf = Callable[[Target], Decimal | None]


def order(group: Group, stats: TargetStats, rng: random.Random,
          price_of: PriceOf | None = None) -> list[Target]:
    """All leaf targets of `group`, in the order they should be tried."""
    children = list(group.targets)
    strategy = group.strategy
    if strategy == "loadbalance":
        children = _weighted_shuffle(children, rng)
    elif strategy == "least-busy":
        children.sort(key=lambda c: _min_stat(c, lambda t: stats.in_flight.get(
            (t.provider, t.model), 0)))
    elif strategy == "latency":
        # Unmeasured targets sort first so each gets measured once.
        children.sort(key=lambda c: _min_stat(c, lambda t: stats.latency.get(
            (t.provider, t.model), -1.0)))
        if len(children) > 1 and rng.random() < EXPLORE:
            children.insert(0, children.pop(rng.randrange(1, len(children))))
    elif strategy == "cost":
        children.sort(key=lambda c: _min_stat(c, lambda t: _price(t, price_of)))
    flat: list[Target] = []
    for child in children:
        flat.extend([child] if isinstance(child, Target) else order(child, stats, rng, price_of))
    return flat


def _weighted_shuffle(children: list[Target | Group], rng: random.Random) -> list[Target | Group]:
    # Efraimidis-Spirakis: key = u^(1/w); sorting by key draws by weight without replacement.
    weighted = [(rng.random() ** (1.0 / c.weight) if c.weight > 0 else -1.0, i, c)
                for i, c in enumerate(children)]
    weighted.sort(key=lambda item: (-item[0], item[1]))
    return [c for _, _, c in weighted]


def _min_stat(node: Target | Group, stat: Callable[[Target], float]) -> float:
    if isinstance(node, Target):
        return stat(node)
    return min((_min_stat(child, stat) for child in node.targets), default=float("inf"))


def _price(target: Target, price_of: PriceOf | None) -> float:
    price = price_of(target) if price_of else None
    return float(price) if price is not None else float("inf")
