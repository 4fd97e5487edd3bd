"""Routing: try a route's targets in strategy order with retries, fallbacks and breakers.

Owns the upstream I/O of one request until the response is committed. Decisions are made on
`UpstreamError.error_class`, never on message text:
- the same target is retried (exponential backoff, full jitter, honouring Retry-After) while
  the class is retriable and attempts remain;
- then the next target is tried if the class is in the route's `fallbackOn`;
- for streams the first upstream chunk is pulled here, before the client sees a byte, so a
  failure up to that point still falls back. After that the app owns the stream.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from llmgate_contract.config import Route, Target

from llmgate_sidecar.breaker import Breakers
from llmgate_sidecar.errors import UpstreamError, UpstreamFailed
from llmgate_sidecar.metrics import Metrics
from llmgate_sidecar.providers.base import StreamDecoder, StreamItem, Usage
from llmgate_sidecar.runtime import Runtime, Upstream
from llmgate_sidecar.strategies import TargetStats, order

MAX_ERROR_BODY = 64 * 1024
# A malformed upstream payload is, for fallback purposes, a server error.
_FALLBACK_CLASS = {"malformed": "serverError"}
_CEILING_PARAMS = frozenset({"max_tokens", "max_completion_tokens"})


@dataclass(slots=True)
class Served:
    """A committed upstream answer: a whole body, or a stream whose first item is in hand."""

    target: Target
    upstream: Upstream
    attempts: int
    upstream_seconds: float
    payload: bytes | None = None
    usage: Usage | None = None
    stream: AsyncIterator[StreamItem] | None = None
    fallbacks: list[str] = field(default_factory=list)


def shape_body(body: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Apply a target's `params`: token limits are ceilings, everything else a default."""
    if not params:
        return body
    shaped = dict(body)
    for name, value in params.items():
        if name in _CEILING_PARAMS and isinstance(value, int):
            current = shaped.get(name)
            shaped[name] = min(current, value) if isinstance(current, int) else value
        else:
            shaped.setdefault(name, value)
    return shaped


class Router:
    def __init__(self, metrics: Metrics, *, stats: TargetStats | None = None,
                 breakers: Breakers | None = None, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        self.metrics = metrics
        self.stats = stats or TargetStats()
        self.breakers = breakers or Breakers(clock=clock, on_change=self._breaker_changed)
        self._rng = rng or random.Random()
        self._clock, self._sleep = clock, sleep

    def _breaker_changed(self, provider: str, model: str, is_open: bool) -> None:
        self.metrics.circuit_open.labels(provider, model).set(1 if is_open else 0)

    async def serve(self, runtime: Runtime, route: Route, body: dict[str, Any], *,
                    stream: bool, include_usage: bool, group_override: Any = None) -> Served:
        deadline = self._clock() + route.timeout if route.timeout else None
        targets = order(group_override or route.group, self.stats, self._rng)
        attempts, fallbacks = 0, []
        last: UpstreamError | None = None
        for index, target in enumerate(targets):
            upstream = runtime.upstreams.get(target.provider)
            if upstream is None or not self.breakers.allow(route.circuit_breaker,
                                                           target.provider, target.model):
                reason = "unsupported" if upstream is None else "circuitOpen"
                if index + 1 < len(targets):
                    fallbacks.append(reason)
                    self.metrics.fallbacks.labels(route.name, reason).inc()
                last = last or UpstreamError(
                    "connectionError", f"{target.provider}: target skipped ({reason})",
                    provider=target.provider, model=target.model)
                continue
            for attempt in range(route.retry.attempts):
                attempts += 1
                try:
                    served = await self._attempt(upstream, target, route, body, stream,
                                                 include_usage, deadline)
                except UpstreamError as exc:
                    last = exc
                    self._failed(route, target, exc)
                    wait = self._retry_wait(route, exc, attempt, deadline)
                    if wait is None:
                        break
                    self.metrics.retries.labels(route.name).inc()
                    await self._sleep(wait)
                    continue
                served.attempts, served.fallbacks = attempts, fallbacks
                self.breakers.record(route.circuit_breaker, target.provider, target.model, None)
                return served
            assert last is not None
            fallback_class = _FALLBACK_CLASS.get(last.error_class, last.error_class)
            if fallback_class not in route.fallback_on or self._expired(deadline):
                break
            if index + 1 < len(targets):
                fallbacks.append(fallback_class)
                self.metrics.fallbacks.labels(route.name, fallback_class).inc()
        if last is None:
            last = UpstreamError("connectionError", "route has no usable target")
        raise UpstreamFailed(last, attempts)

    def _failed(self, route: Route, target: Target, exc: UpstreamError) -> None:
        self.metrics.attempts.labels(target.provider, target.model, "error").inc()
        self.metrics.upstream_errors.labels(target.provider, exc.error_class).inc()
        self.breakers.record(route.circuit_breaker, target.provider, target.model,
                             exc.error_class)

    def _retry_wait(self, route: Route, exc: UpstreamError, attempt: int,
                    deadline: float | None) -> float | None:
        """Seconds to wait before retrying the same target, or None to move on."""
        if attempt + 1 >= route.retry.attempts or exc.error_class not in UpstreamError.RETRIABLE:
            return None
        if exc.status is not None and exc.status not in route.retry.on_status:
            return None
        backoff = route.retry.backoff
        wait = self._rng.uniform(0, min(backoff.max, backoff.initial * 2 ** attempt))
        if exc.retry_after is not None:
            wait = max(wait, exc.retry_after)
        if deadline is not None and self._clock() + wait >= deadline:
            return None
        return wait

    def _expired(self, deadline: float | None) -> bool:
        return deadline is not None and self._clock() >= deadline

    async def _attempt(self, upstream: Upstream, target: Target, route: Route,
                       body: dict[str, Any], stream: bool, include_usage: bool,
                       deadline: float | None) -> Served:
        timeout = target.timeout
        if deadline is not None:
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise UpstreamError("timeout", f"route {route.name}: deadline exceeded",
                                    provider=target.provider, model=target.model)
            timeout = min(timeout, remaining) if timeout else remaining
        prepare = getattr(upstream.adapter, "prepare", None)
        if prepare is not None:
            # I/O an adapter needs before it can translate (e.g. an OAuth token refresh).
            await prepare()
        request = upstream.adapter.chat_request(shape_body(body, target.params), target,
                                                stream=stream)
        started = self._clock()
        self.stats.started(target)
        seconds: float | None = None
        try:
            async with asyncio.timeout(timeout):
                response = await upstream.transport.send(
                    request, timeout=target.timeout, provider=target.provider,
                    model=target.model)
                if not 200 <= response.status < 300:
                    payload = (await response.read())[:MAX_ERROR_BODY]
                    raise upstream.adapter.classify(response.status, response.headers,
                                                    payload, target)
                if stream:
                    decoder = upstream.adapter.stream_decoder(target, include_usage=include_usage)
                    items = _translate(response.events(), decoder)
                    first = await anext(items)
                    seconds = self._clock() - started
                    return Served(target, upstream, 0, seconds, stream=_prepend(first, items))
                payload = await response.read()
                seconds = self._clock() - started
                translated, usage = upstream.adapter.chat_response(payload, target)
                return Served(target, upstream, 0, seconds, payload=translated, usage=usage)
        except TimeoutError:
            raise UpstreamError("timeout", f"{target.provider}: no answer within "
                                f"{timeout:.1f}s", provider=target.provider,
                                model=target.model) from None
        except StopAsyncIteration:
            raise UpstreamError("connectionError", f"{target.provider}: empty stream",
                                provider=target.provider, model=target.model) from None
        finally:
            self.stats.finished(target, seconds)
            if seconds is not None:
                self.metrics.attempts.labels(target.provider, target.model, "success").inc()


async def _translate(events: AsyncIterator[Any], decoder: StreamDecoder
                     ) -> AsyncIterator[StreamItem]:
    try:
        async for event in events:
            item = decoder.feed(event)
            if item.downstream or item.usage or item.done:
                yield item
        yield decoder.finish()
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def _prepend(first: StreamItem, rest: AsyncIterator[StreamItem]
                   ) -> AsyncIterator[StreamItem]:
    try:
        yield first
        async for item in rest:
            yield item
    finally:
        await rest.aclose()  # type: ignore[attr-defined]
