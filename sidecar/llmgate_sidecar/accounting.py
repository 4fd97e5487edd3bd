"""Reserve before the call, settle after: the money side of one request.

`reservation` (pure) prices a request's worst case over every target the route might use;
`Accountant` admits it through the `Limiter` and settles the real cost from a task the app
owns, so a client that disconnects mid-stream still gets its usage booked. When usage is
unknown (a stream cut before its usage event) the reservation is booked: never less than
what may have been spent. Handlers call it; it never talks HTTP.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from llmgate_contract.config import Group, Route, Target, VirtualKey

from llmgate_sidecar.limits import Limiter
from llmgate_sidecar.pricing import estimate_input_tokens, price_for, requested_output_tokens
from llmgate_sidecar.providers.base import Usage
from llmgate_sidecar.runtime import Runtime
from llmgate_sidecar.store import Ticket

log = logging.getLogger("llmgate.accounting")

# Worst-case output when neither the client nor the target's params bound it.
DEFAULT_MAX_OUTPUT_TOKENS = 4096


@dataclass(frozen=True, slots=True)
class Reservation:
    input_tokens: int
    output_tokens: int
    usd: Decimal


def leaves(group: Group) -> Iterator[Target]:
    for child in group.targets:
        if isinstance(child, Target):
            yield child
        else:
            yield from leaves(child)


def reservation(runtime: Runtime, route: Route, group: Group,
                body: dict[str, Any]) -> Reservation:
    """Tokens and the highest worst-case cost over the targets `group` may try."""
    input_tokens = estimate_input_tokens(body)
    asked = requested_output_tokens(body)
    worst_usd, worst_out = Decimal(0), 0
    for target in leaves(group):
        ceiling = target.params.get("max_completion_tokens") or target.params.get("max_tokens")
        output = min(asked, ceiling) if asked and isinstance(ceiling, int) else \
            asked or (ceiling if isinstance(ceiling, int) else DEFAULT_MAX_OUTPUT_TOKENS)
        upstream = runtime.upstreams.get(target.provider)
        overrides = upstream.provider.pricing if upstream else None
        cost = price_for(target.model, overrides).worst_case(input_tokens, output)
        worst_usd, worst_out = max(worst_usd, cost), max(worst_out, output)
    return Reservation(input_tokens, worst_out, worst_usd)


def usage_cost(runtime: Runtime, target: Target, usage: Usage) -> Decimal:
    upstream = runtime.upstreams.get(target.provider)
    return price_for(target.model, upstream.provider.pricing if upstream else None).cost(usage)


class Accountant:
    """Admission and settlement for one app; settlement tasks are awaited on shutdown."""

    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter
        self._tasks: set[asyncio.Task[None]] = set()

    async def admit(self, runtime: Runtime, policy: VirtualKey,
                    planned: Reservation) -> Ticket:
        return await self.limiter.admit(
            policy, namespace=runtime.namespace,
            estimated_tokens=planned.input_tokens + planned.output_tokens,
            reserve_usd=planned.usd)

    def settle_later(self, ticket: Ticket, planned: Reservation, runtime: Runtime,
                     target: Target | None, usage: Usage | None) -> None:
        """Book the request's real cost in the background (survives the client leaving)."""
        if usage is not None and usage.known and target is not None:
            tokens = usage.prompt_tokens + usage.completion_tokens
            cost = usage_cost(runtime, target, usage)
        elif target is None:
            tokens, cost = 0, Decimal(0)  # no upstream answered: nothing was spent
        else:
            tokens, cost = planned.input_tokens + planned.output_tokens, planned.usd
        task = asyncio.get_running_loop().create_task(
            self._settle(ticket, tokens, cost), name="llmgate-settle")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _settle(self, ticket: Ticket, tokens: int, cost: Decimal) -> None:
        try:
            await self.limiter.settle(ticket, tokens=tokens, cost_usd=cost)
        except Exception:
            # The store's lease releases the reservation eventually; say that it happened.
            log.exception("settling usage failed", extra={"scope": ticket.scope})

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self.limiter.store.aclose()
