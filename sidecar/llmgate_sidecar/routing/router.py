"""Routing: try a route's targets in strategy order with retries, fallbacks and breakers.

Owns the upstream I/O of one request until the response is committed, and the committed
stream's reads afterwards. Decisions are made on `UpstreamError.error_class`, never on text:
- the same target is retried (exponential backoff, full jitter, honouring Retry-After) while
  the class is retriable, its status is in `retry.onStatus` and attempts and deadline allow;
- then the next target is tried if the class is in the route's `fallbackOn`;
- for streams the first upstream chunk is pulled here, before the client sees a byte, so a
  failure up to that point still falls back. After that `CommittedStream` bounds every read
  (idle gap and route deadline) and the handler reports failures in-band.
Exact semantics: docs/routing.md. Called by the request handlers; never writes downstream.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from llmgate_contract.config import Group, Route, Target

from llmgate_sidecar.config.pricing import CEILING_FIELDS, cap_output, output_ceiling
from llmgate_sidecar.config.runtime import Runtime, Upstream
from llmgate_sidecar.errors import UpstreamError, UpstreamFailed
from llmgate_sidecar.observability import tracing
from llmgate_sidecar.observability.metrics import Metrics
from llmgate_sidecar.routing.breaker import Breakers
from llmgate_sidecar.routing.strategies import PriceOf, TargetStats, order
from llmgate_sidecar.routing.streams import CommittedStream, translate
from llmgate_sidecar.upstream.providers.base import StreamItem, UpstreamRequest, Usage, checked
from llmgate_sidecar.upstream.transport import Bounds, UpstreamResponse

log = logging.getLogger("llmgate.routing")
# Provider-side faults that are not in the fallbackOn vocabulary fall back like a server
# error: a malformed payload, or a provider whose credentials were rejected.
_FALLBACK_CLASS = {"malformed": "serverError", "auth": "serverError"}


@dataclass(slots=True)
class Served:
    """A committed upstream answer: a whole body, or a stream whose first item is in hand."""

    target: Target
    upstream: Upstream
    attempts: int
    upstream_seconds: float
    payload: bytes | None = None
    usage: Usage | None = None
    stream: CommittedStream | None = None
    fallbacks: list[str] = field(default_factory=list)
    # Pass-through only: the upstream's 2xx response, still unread, for the caller to relay.
    response: UpstreamResponse | None = None

    def __post_init__(self) -> None:
        checked(self.usage)  # raised inside the attempt: retried, fallen back, then 502


# One try at one target: the committed answer, or an UpstreamError.
Attempt = Callable[[Upstream, Target, "float | None"], Awaitable[Served]]


# The longest Retry-After honoured beyond `backoff.max` when a route sets no `timeout`.
SERVER_WAIT_MAX = 30.0


@dataclass(slots=True)
class _Tally:
    attempts: int = 0
    fallbacks: list[str] = field(default_factory=list)
    last: UpstreamError | None = None


def shape_body(body: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Apply a target's `params`: token limits are a ceiling on every output-limit field
    (`cap_output`: a client's max_completion_tokens cannot bypass a max_tokens ceiling),
    everything else a default."""
    if not params:
        return body
    ceiling = output_ceiling(params)
    shaped = dict(body) if ceiling is None else cap_output(
        body, ceiling, tuple(name for name in CEILING_FIELDS if name in params))
    for name, value in params.items():
        if name not in CEILING_FIELDS:
            shaped.setdefault(name, value)
    return shaped


def pricer(runtime: Runtime) -> PriceOf:
    """USD per million input + output tokens of a target; None when the model is unpriced."""
    def price_of(target: Target) -> Decimal | None:
        price = runtime.price(target)
        return price.input_per_million + price.output_per_million if price.priced else None
    return price_of


class Router:
    """One per app: breakers and target stats live here, shared by every request."""

    def __init__(self, metrics: Metrics, *, stats: TargetStats | None = None,
                 breakers: Breakers | None = None, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 bounds: Bounds | None = None) -> None:
        self.metrics = metrics
        # Default deadlines for routes and targets that set none (a stalled upstream must
        # end the request, not hang it).
        self.bounds = bounds or Bounds()
        self.stats = stats or TargetStats()
        self.breakers = breakers or Breakers(clock=clock, on_change=self._breaker_changed)
        self._rng = rng or random.Random()
        self._clock, self._sleep = clock, sleep
        self.open_streams: set[CommittedStream] = set()

    def interrupt_streams(self) -> int:
        """End every committed stream at its next read (shutdown); returns how many."""
        streams = list(self.open_streams)
        for stream in streams:
            stream.interrupt()
        return len(streams)

    def _breaker_changed(self, provider: str, model: str, is_open: bool) -> None:
        self.metrics.circuit_open.labels(provider, model).set(1 if is_open else 0)

    def chat_attempt(self, route: Route, body: dict[str, Any], *, stream: bool,
                     include_usage: bool) -> Attempt:
        """One try of a chat completion at one target (JSON, or a stream committed after
        its first chunk), for `call`."""
        async def attempt(upstream: Upstream, target: Target,
                          deadline: float | None) -> Served:
            return await self._attempt(upstream, target, route, body, stream, include_usage,
                                       deadline)
        return attempt

    async def call(self, runtime: Runtime, route: Route, group: Group, attempt: Attempt,
                   usable: Callable[[Upstream], bool] | None = None) -> Served:
        """Try `group`'s targets in strategy order with retries and fallbacks; `attempt` does
        one try at one target. Targets whose upstream is not `usable` (e.g. a provider
        without embeddings) are skipped like a missing one."""
        deadline = self._clock() + (route.timeout or self.bounds.request)
        targets = order(group, self.stats, self._rng, pricer(runtime))
        tally = _Tally()
        for index, target in enumerate(targets):
            more = index + 1 < len(targets)
            upstream = runtime.upstreams.get(target.provider)
            if upstream is not None and usable is not None and not usable(upstream):
                upstream = None
            if upstream is None or not self.breakers.allow(route.circuit_breaker,
                                                           target.provider, target.model):
                reason = "unsupported" if upstream is None else "circuitOpen"
                self._fell_back(route, tally, reason, more)
                tally.last = tally.last or UpstreamError(
                    "connectionError", f"{target.provider}: target skipped ({reason})",
                    provider=target.provider, model=target.model)
                continue
            served = await self._try_target(upstream, target, route, deadline, tally, attempt,
                                            more=more)
            if served is not None:
                return served
            assert tally.last is not None
            fallback_class = _FALLBACK_CLASS.get(tally.last.error_class, tally.last.error_class)
            if fallback_class not in route.fallback_on or self._expired(deadline):
                break
            self._fell_back(route, tally, fallback_class, more)
        last = tally.last or UpstreamError("connectionError", "route has no usable target")
        raise UpstreamFailed(last, tally.attempts)

    def _fell_back(self, route: Route, tally: _Tally, reason: str, more: bool) -> None:
        if more:
            tally.fallbacks.append(reason)
            self.metrics.fallbacks.labels(route.name, reason).inc()

    async def _try_target(self, upstream: Upstream, target: Target, route: Route,
                          deadline: float | None, tally: _Tally,
                          attempt_once: Attempt, *, more: bool = False) -> Served | None:
        """Attempts at one target; the committed answer, or None with `tally.last` set."""
        for attempt in range(route.retry.attempts):
            tally.attempts += 1
            try:
                with tracing.attempt_span(target.provider, target.model, route.name):
                    served = await attempt_once(upstream, target, deadline)
            except UpstreamError as exc:
                exc.message = upstream.redact(exc.message)
                tally.last = exc
                self._failed(route, target, exc)
                wait = self._retry_wait(route, exc, attempt, deadline, more=more)
                log.info("upstream attempt failed", extra={
                    "route": route.name, "provider": target.provider, "model": target.model,
                    "attempt": tally.attempts, "error_class": exc.error_class,
                    "upstream_status": exc.status, "retry_in_s": wait})
                if wait is None:
                    return None
                self.metrics.retries.labels(route.name).inc()
                await self._sleep(wait)
                continue
            served.attempts, served.fallbacks = tally.attempts, tally.fallbacks
            self.breakers.record(route.circuit_breaker, target.provider, target.model, None)
            return served
        return None

    def _failed(self, route: Route, target: Target, exc: UpstreamError) -> None:
        self.metrics.attempts.labels(target.provider, target.model, "error").inc()
        self.metrics.upstream_errors.labels(target.provider, exc.error_class).inc()
        self.breakers.record(route.circuit_breaker, target.provider, target.model,
                             exc.error_class)

    def _retry_wait(self, route: Route, exc: UpstreamError, attempt: int,
                    deadline: float | None, *, more: bool = False) -> float | None:
        """Seconds to wait before retrying the same target, or None to move on."""
        if attempt + 1 >= route.retry.attempts or exc.error_class not in UpstreamError.RETRIABLE:
            return None
        if exc.status is not None and exc.status not in route.retry.on_status:
            return None
        backoff = route.retry.backoff
        wait = self._rng.uniform(0, min(backoff.max, backoff.initial * 2 ** attempt))
        if exc.retry_after is not None:
            # More patience than the route's backoff allows: try elsewhere when there is an
            # elsewhere; with no target left to fall back to, wait as the upstream asked
            # (bounded by the deadline below; SERVER_WAIT_MAX when the route sets no timeout
            # and only the default whole-request deadline applies).
            fallback = _FALLBACK_CLASS.get(exc.error_class, exc.error_class)
            if exc.retry_after > backoff.max and (
                    (more and fallback in route.fallback_on) or
                    (not route.timeout and exc.retry_after > SERVER_WAIT_MAX)):
                return None
            wait = max(wait, exc.retry_after)
        if deadline is not None and self._clock() + wait >= deadline:
            return None
        return wait

    def _expired(self, deadline: float | None) -> bool:
        return deadline is not None and self._clock() >= deadline

    def _attempt_timeout(self, route: Route, target: Target,
                         deadline: float | None) -> float | None:
        timeout = target.timeout
        if deadline is not None:
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise UpstreamError("timeout", f"route {route.name}: deadline exceeded",
                                    provider=target.provider, model=target.model, unsent=True)
            timeout = min(timeout, remaining) if timeout else remaining
        return timeout

    async def _attempt(self, upstream: Upstream, target: Target, route: Route,
                       body: dict[str, Any], stream: bool, include_usage: bool,
                       deadline: float | None) -> Served:
        timeout = self._attempt_timeout(route, target, deadline)
        await upstream.adapter.prepare()
        request = upstream.adapter.chat_request(shape_body(body, target.params), target,
                                                stream=stream)
        started = self._clock()
        self.stats.started(target)
        seconds: float | None = None
        committed = False
        try:
            async with asyncio.timeout(timeout) as bound:
                response = await self._send(upstream, target, request, bound)
                if stream:
                    decoder = upstream.adapter.stream_decoder(target, include_usage=include_usage)
                    items = translate(response.events(), decoder, response)
                    first = await anext(items)
                    seconds = self._clock() - started
                    committed = True
                    return Served(target, upstream, 0, seconds, stream=self._committed(
                        first, items, route, target, deadline, upstream.redact))
                payload = await response.read()
                seconds = self._clock() - started
                translated, usage = upstream.adapter.chat_response(payload, target)
                return Served(target, upstream, 0, seconds, payload=translated, usage=usage)
        except TimeoutError:
            raise _no_answer(target, timeout) from None
        except StopAsyncIteration:
            raise UpstreamError("connectionError", f"{target.provider}: empty stream",
                                provider=target.provider, model=target.model) from None
        finally:
            if committed:
                # Latency is time to the first chunk; in-flight lasts until the stream ends.
                self.stats.observe(target, seconds)
            else:
                self.stats.finished(target, seconds)
            if seconds is not None:
                self.metrics.attempts.labels(target.provider, target.model, "success").inc()

    async def _send(self, upstream: Upstream, target: Target, request: UpstreamRequest,
                    bound: asyncio.Timeout) -> UpstreamResponse:
        """Send one request; a non-2xx answer becomes the adapter's classified error.

        `bound` is the attempt's deadline; the wait for the response head is bounded by the
        first-byte timeout too (the target's `timeout`, else `Bounds.first_byte`), by
        moving `bound` closer for that wait when it is later (one timer per attempt)."""
        send = upstream.transport.send(request, timeout=target.timeout,
                                       provider=target.provider, model=target.model)
        ends_at = bound.when()
        head_by = asyncio.get_running_loop().time() + (target.timeout or self.bounds.first_byte)
        if ends_at is not None and ends_at <= head_by:
            response = await send
        else:
            bound.reschedule(head_by)
            response = await send
            bound.reschedule(ends_at)
        if not 200 <= response.status < 300:
            payload = await response.head(self.bounds.error_bytes)
            raise upstream.adapter.classify(response.status, response.headers, payload, target)
        return response

    async def exchange(self, upstream: Upstream, target: Target, route: Route,
                       deadline: float | None, build: Callable[[], UpstreamRequest], *,
                       keep_open: bool = False) -> tuple[UpstreamResponse, bytes | None, float]:
        """One non-chat try (embeddings, pass-through): a 2xx response and its body (None
        with `keep_open`: the caller streams it), else a classified UpstreamError."""
        timeout = self._attempt_timeout(route, target, deadline)
        await upstream.adapter.prepare()
        request = build()
        started = self._clock()
        self.stats.started(target)
        seconds: float | None = None
        try:
            async with asyncio.timeout(timeout) as bound:
                response = await self._send(upstream, target, request, bound)
                body = None if keep_open else await response.read()
                seconds = self._clock() - started
                return response, body, seconds
        except TimeoutError:
            raise _no_answer(target, timeout) from None
        finally:
            self.stats.finished(target, seconds)
            if seconds is not None:
                self.metrics.attempts.labels(target.provider, target.model, "success").inc()

    def _committed(self, first: StreamItem, items: AsyncIterator[StreamItem], route: Route,
                   target: Target, deadline: float | None,
                   redact: Callable[[str], str]) -> CommittedStream:
        loop = asyncio.get_running_loop()
        deadline_at = loop.time() + (deadline - self._clock()) if deadline else None

        def failed(exc: UpstreamError) -> None:
            exc.message = redact(exc.message)
            # A stream that dies after its first byte is as unhealthy as one that never came.
            self.breakers.record(route.circuit_breaker, target.provider, target.model,
                                 exc.error_class)
            log.info("upstream stream failed after the first byte", extra={
                "route": route.name, "provider": target.provider, "model": target.model,
                "error_class": exc.error_class})

        def closed() -> None:
            self.open_streams.discard(stream)
            self.stats.finished(target, None)

        stream = CommittedStream(first, items, target,
                                 idle=target.timeout or self.bounds.idle,
                                 deadline_at=deadline_at, on_error=failed, on_close=closed)
        self.open_streams.add(stream)
        return stream


def _no_answer(target: Target, timeout: float | None) -> UpstreamError:
    return UpstreamError("timeout", f"{target.provider}: no answer within {timeout or 0:.1f}s",
                         provider=target.provider, model=target.model)
