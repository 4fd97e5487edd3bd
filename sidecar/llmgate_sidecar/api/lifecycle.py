"""The one request lifecycle every model-addressed endpoint goes through.

    authenticate -> guard -> cache -> admit -> route -> reply -> settle -> observe

`serve(request, endpoint)` runs these steps in this order for chat completions, Anthropic
Messages, embeddings and every pass-through path; an `Endpoint` (see `api.endpoints`) says
only what differs between them:

    parse(request, raw)           the inbound body -> a `Call` (model, body, stream)
    delegate(call)                (rarely) another spec of the same path serves this call
    dialect                       the API the answer and errors are written in
    guarded                       whether route guardrails apply
    usable(upstream)              which targets can serve it (others are skipped); when the
      unsupported(names)          route has none, the 400 raised before anything is reserved
    reserve(exchange)             the worst case admitted against limits and budget
    attempt(exchange)             one try at one target (routing retries and falls back)
    reply(exchange, served)       write the committed answer; fill `exchange.outcome`
    replay(exchange, hit)         (a `CachedEndpoint`: the response cache applies) answer
                                  from a cache hit

Everything else is written once, here, so it is the same on every endpoint: who the caller
is and which route and targets (`front`), in-flight accounting, and the booking:

- answered (fully or not): the usage the upstream reported, or the whole reservation when
  usage is unknown (a stream cut short, binary answers without usage);
- the client went away while an upstream call was under way (`CancelledError` before an
  answer committed): the whole reservation, since what it cost upstream is unknown;
- the client went away after the answer committed (mid-stream): the whole reservation;
- a try the upstream may have billed although it failed (sent, then a timeout, the route
  deadline or a lost connection, with no HTTP error status back): the reservation, on top
  of what the request's answer books; before trying again after such a try, the request
  holds one more reservation (`Accountant.top_up`; refused: 429), so every try that may be
  billed is covered by a worst case admitted against the budget;
- every target failed with an error status, or never received the request: nothing;
- a cache hit: nothing (it reserves nothing, but counts as a request).

Settlement runs in the background, except for a key with fewer than
`accounting.NEAR_LIMIT` reservations like this request's left: then it is booked before the
client gets the end of the answer (a JSON body is sent after `serve` returns; a stream's
last bytes are written after `Outcome.before_end`), so a client sending one request at a
time is admitted, on any replica, against what its last request really cost rather than
its reservation. Keys far from their limit pay no extra round trip.

Metrics, the log line and the span are written from the request's `RequestRecord` on every
outcome (`observability.observe`).

Adding an endpoint: write an `Endpoint` subclass next to the others in `api.endpoints` (or
its own module when it has its own translation, as `api.embeddings` and `api.passthrough`
do), implement `parse`, `reserve`, `attempt` and `reply` (abstract: mypy refuses an endpoint
that misses one; subclass `CachedEndpoint` and implement `replay` too when the response cache
applies), override `usable`/`unsupported` when only some providers can serve it, and add an
instance to `api.endpoints.ENDPOINTS`: the app
routes `POST <path>` to it and its errors leave in its dialect. Then add it to the
parametrised booking test (tests/sidecar/test_lifecycle.py), which drives disconnects,
deadlines and upstream failures through every endpoint in that table.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import orjson
from aiohttp import web
from llmgate_contract.config import Group, Route, Target, VirtualKey

from llmgate_sidecar.api.dialects import OPENAI, Dialect
from llmgate_sidecar.api.replies import Outcome, record_usage
from llmgate_sidecar.api.state import (
    ACCOUNTANT,
    CACHE,
    CONFIG,
    GUARDRAILS,
    METRICS,
    REQUEST_ID,
    ROUTER,
    SETTINGS,
)
from llmgate_sidecar.cache.response import Hit, Plan
from llmgate_sidecar.config.runtime import Runtime, Upstream, leaves
from llmgate_sidecar.errors import (
    BadRequest,
    NotFound,
    RequestTimeout,
    Unavailable,
    UpstreamError,
    may_have_billed,
)
from llmgate_sidecar.observability.observe import observed
from llmgate_sidecar.observability.record import RequestRecord
from llmgate_sidecar.policy.accounting import FREE, Reservation
from llmgate_sidecar.policy.auth import authenticate, check_model
from llmgate_sidecar.policy.store import Ticket
from llmgate_sidecar.routing.router import Attempt, Served

METADATA_HEADER = "x-llmgate-metadata"


class Call(Protocol):
    """What an endpoint's parser read from the request: what the lifecycle acts on."""

    @property
    def model(self) -> str: ...
    @property
    def body(self) -> dict[str, Any]:
        """The JSON the gateway reads (guardrails, cache key, reservation); {} when the
        body is not JSON (multipart)."""
    @property
    def stream(self) -> bool: ...
    @property
    def include_usage(self) -> bool: ...


C = TypeVar("C", bound=Call)


def current_runtime(request: web.Request) -> Runtime:
    runtime = request.app[CONFIG].current
    if runtime is None:
        raise Unavailable("no llmgate config is loaded yet (is the llmgate-config ConfigMap "
                          "mounted and complete?)", code="config_not_loaded")
    return runtime


def caller(request: web.Request, runtime: Runtime) -> VirtualKey:
    return authenticate(runtime, request.headers, peer=request.remote,
                        bound_key=request.app[SETTINGS].virtual_key, now=datetime.now(UTC))


def request_metadata(headers: Mapping[str, str]) -> dict[str, str]:
    raw = headers.get(METADATA_HEADER)
    if not raw:
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest(f"{METADATA_HEADER} must be a JSON object", param=METADATA_HEADER,
                         code="invalid_metadata") from None
    if not isinstance(value, dict):
        raise BadRequest(f"{METADATA_HEADER} must be a JSON object", param=METADATA_HEADER,
                         code="invalid_metadata")
    return {str(k): str(v) for k, v in value.items()}


def select_group(route: Route, headers: Mapping[str, str], metadata: Mapping[str, str],
                 key_name: str) -> Group:
    """The first rule whose every condition matches picks the targets; else the route's."""
    for rule in route.rules:
        match = rule.match
        if match.virtual_keys and key_name not in match.virtual_keys:
            continue
        if any(headers.get(k) != v for k, v in match.headers.items()):
            continue
        if any(metadata.get(k) != v for k, v in match.metadata.items()):
            continue
        return rule.group
    return route.group


@dataclass(frozen=True, slots=True)
class Front:
    """Who asks, for which route, with which targets: settled before any upstream work."""

    runtime: Runtime
    policy: VirtualKey
    route: Route
    metadata: dict[str, str]
    group: Group


def front(request: web.Request, record: RequestRecord, model: str, *,
          runtime: Runtime | None = None) -> Front:
    runtime = runtime or current_runtime(request)
    policy = caller(request, runtime)
    record.virtual_key, record.key_metadata = policy.name, policy.metadata
    route = runtime.routes_by_model.get(model)
    if route is None:
        raise NotFound(f"the model {model!r} does not exist or is not served here")
    record.route = route.name
    check_model(policy, model, route.model)
    metadata = request_metadata(request.headers)
    group = select_group(route, request.headers, metadata, policy.name)
    return Front(runtime, policy, route, metadata, group)


@dataclass(slots=True)
class Exchange(Generic[C]):
    """One request on its way through the lifecycle: what every step after `front` reads."""

    request: web.Request
    front: Front
    call: C  # what the endpoint's parser read
    body: dict[str, Any]  # `call.body` after the route's guardrails
    record: RequestRecord
    ticket: Ticket | None = None
    plan: Plan | None = None
    deadline_at: float | None = None  # loop time the route's deadline ends at
    outcome: Outcome = field(default_factory=Outcome)
    planned: Reservation = FREE
    unknown_tries: int = 0  # failed tries the upstream may have billed
    top_ups: list[Ticket] = field(default_factory=list)  # one more worst case per retry
    booked: Decimal | None = None  # the cost, once settled before the answer's end

    @property
    def route(self) -> Route:
        return self.front.route

    def overhead(self, served: Served) -> float:
        """Seconds from the request's arrival to now spent in the gateway, not upstream."""
        return time.perf_counter() - self.record.started - served.upstream_seconds


class Endpoint(ABC, Generic[C]):
    """One inbound endpoint: what `serve` needs to know that differs between endpoints.

    Subclasses set `path` and implement the abstract `parse`, `reserve`, `attempt` and
    `reply` (see the module docstring); the rest here is that of an endpoint every target
    can serve, without guardrails, answering in OpenAI's dialect."""

    path: str
    dialect: Dialect = OPENAI
    guarded: ClassVar[bool] = False

    @abstractmethod
    def parse(self, request: web.Request, raw: bytes) -> C:
        """The inbound body -> the `Call` the lifecycle acts on (client mistakes: 4xx)."""

    def delegate(self, call: Call) -> Endpoint[Any]:
        """The endpoint that serves this request: this one, or another spec of the same
        path that `call` needs (it then parses the body again itself)."""
        return self

    def usable(self, upstream: Upstream) -> bool:
        return True

    def unsupported(self, names: list[str]) -> BadRequest:
        """The 400 when none of the route's targets is `usable` (names: `provider (kind)`)."""
        return BadRequest(f"{self.path} has no provider that serves it on this route: "
                          f"{', '.join(names)}", param="model", code="not_supported")

    @abstractmethod
    def reserve(self, exchange: Exchange[C]) -> Reservation:
        """The worst case admitted against the key's limits and budget."""

    @abstractmethod
    def attempt(self, exchange: Exchange[C]) -> Attempt:
        """One try at one target; the router retries and falls back around it."""

    @abstractmethod
    async def reply(self, exchange: Exchange[C], served: Served) -> web.StreamResponse:
        """Write the committed answer in `dialect`; fill `exchange.outcome`."""

    def check_targets(self, runtime: Runtime, group: Group) -> None:
        names = []
        for target in leaves(group):
            upstream = runtime.upstreams.get(target.provider)
            if upstream is not None and self.usable(upstream):
                return
            names.append(f"{target.provider} "
                         f"({upstream.provider.kind if upstream else 'unknown'})")
        raise self.unsupported(sorted(names))


class CachedEndpoint(Endpoint[C]):
    """An endpoint the response cache applies to: `serve` looks the request up before it
    reserves anything and answers a hit with `replay`."""

    @abstractmethod
    async def replay(self, exchange: Exchange[C], hit: Hit) -> web.StreamResponse:
        """Answer from a cache hit, in `dialect`, as the stored answer was served."""


async def _cache_lookup(exchange: Exchange[C], endpoint: CachedEndpoint[C]) -> Hit | None:
    request, f = exchange.request, exchange.front
    cache, metrics = request.app[CACHE], request.app[METRICS]
    plan = exchange.plan = cache.plan(
        f.route, exchange.body, namespace=f.runtime.namespace, key_name=f.policy.name,
        metadata=f.metadata, headers=request.headers, group=f.group, api=endpoint.dialect.api)
    hit = await cache.lookup(plan, stream=exchange.call.stream) if plan.read else None
    if plan.read or plan.header == "refresh":
        metrics.cache.labels(f.route.name, "hit" if hit else plan.header).inc()
    elif plan.header == "bypass":
        metrics.cache.labels(f.route.name, "bypass").inc()
    return hit


def metered(exchange: Exchange[Any], attempt: Attempt) -> Attempt:
    """`attempt`, counting the failed tries the upstream may have billed, and holding one
    more reservation before any try that follows one (see the module docstring)."""
    app, f = exchange.request.app, exchange.front

    async def once(upstream: Upstream, target: Target, deadline: float | None) -> Served:
        if exchange.unknown_tries > len(exchange.top_ups):
            exchange.top_ups.append(await app[ACCOUNTANT].top_up(
                f.runtime, f.policy, exchange.planned, app[METRICS]))
        try:
            return await attempt(upstream, target, deadline)
        except UpstreamError as exc:
            if may_have_billed(exc):
                exchange.unknown_tries += 1
            raise
    return once


async def read_body(request: web.Request) -> bytes:
    """The request body, within `client_body_timeout` (a trickled or endless body is a 408);
    a body aiohttp cannot decode (a `Content-Encoding` it does not match) is a 400. A body
    that came whole with the headers (most do) is read without arming the deadline: nothing
    is left to wait for."""
    seconds = request.app[SETTINGS].client_body_timeout
    try:
        if request.content.is_eof():
            return await request.read()
        async with asyncio.timeout(seconds):
            return await request.read()
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {seconds:g}s") from None
    except web.RequestPayloadError as exc:
        raise BadRequest(f"the request body cannot be read: {exc.__cause__ or exc}",
                         code="invalid_body") from None


async def serve(request: web.Request, endpoint: Endpoint[C]) -> web.StreamResponse:
    """One request through every step of the lifecycle (module docstring)."""
    app = request.app
    metrics, accountant = app[METRICS], app[ACCOUNTANT]
    with observed(metrics, RequestRecord(request[REQUEST_ID]), request.headers) as record:
        runtime = current_runtime(request)
        raw = await read_body(request)
        call = endpoint.parse(request, raw)
        chosen = endpoint.delegate(call)
        if chosen is not endpoint:  # e.g. a Responses request only OpenAI itself can serve
            endpoint, call = chosen, chosen.parse(request, raw)
        record.stream = call.stream
        # authenticate: the caller, its route, the allow-list, the rule-selected targets
        f = front(request, record, call.model, runtime=runtime)
        # guard: targets that can serve this endpoint, then the route's guardrails
        endpoint.check_targets(runtime, f.group)
        rails = app[GUARDRAILS].for_route(f.route) if endpoint.guarded else None
        body = await app[GUARDRAILS].check(rails, call.body) if rails is not None else call.body
        exchange = Exchange(request, f, call, body, record)
        cached = endpoint if isinstance(endpoint, CachedEndpoint) else None
        hit = await _cache_lookup(exchange, cached) if cached is not None else None
        # admit: a cache hit counts as a request but reserves no money
        planned = exchange.planned = FREE if hit else endpoint.reserve(exchange)
        exchange.ticket = await accountant.admit(runtime, f.policy, planned, metrics)
        metrics.in_flight.inc()
        served: Served | None = None
        answered, abandoned = False, False

        async def settle_first() -> None:
            """Book a near-limit key's answer before its end is written (module docstring)."""
            if served is None or exchange.ticket is None:
                return
            exchange.booked = await accountant.settle_before_end(
                exchange.ticket, planned, runtime, served.target, exchange.outcome.usage,
                metrics=metrics, route=f.route.name, policy=f.policy,
                unknown_tries=exchange.unknown_tries - len(exchange.top_ups))
        try:
            if cached is not None and hit is not None:
                exchange.outcome.usage = hit.usage
                record.provider = record.model = "cache"
                record.answered("2xx", hit.usage, time.perf_counter() - record.started)
                return await cached.replay(exchange, hit)
            # route: strategy order, retries, fallbacks, breakers, the route deadline
            # routes without a timeout get the default one (a hostile upstream cannot hang)
            exchange.deadline_at = asyncio.get_running_loop().time() + (
                f.route.timeout or app[ROUTER].bounds.request)
            if accountant.near_limit(exchange.ticket):
                exchange.outcome.before_end = settle_first
            served = await app[ROUTER].call(runtime, f.route, f.group,
                                            metered(exchange, endpoint.attempt(exchange)),
                                            usable=endpoint.usable)
            record.served(served)
            # reply: in the endpoint's dialect; usage as the upstream reported it
            response = await endpoint.reply(exchange, served)
            answered = True
            outcome = exchange.outcome
            record.answered(outcome.status_class, outcome.usage, outcome.overhead)
            return response
        except asyncio.CancelledError:
            abandoned = served is None  # the client left while an upstream call was under way
            raise
        finally:
            metrics.in_flight.dec()
            target: Target | None = None
            if served is not None:
                target = served.target
                if served.response is not None:
                    served.response.release()
                record_usage(metrics, f.route, served, f.policy, exchange.outcome.usage)
            # settle: the usage of an answer, else the reservation or nothing, plus the
            # reservation for each failed try that may have been billed (see above)
            for top_up in exchange.top_ups:
                accountant.settle_later(top_up, planned, runtime, None, None, abandoned=True)
            unknown = exchange.unknown_tries - len(exchange.top_ups)
            if exchange.booked is not None:  # settled before the end was sent
                cost = exchange.booked
            elif answered and accountant.near_limit(exchange.ticket):
                # A JSON answer is sent after this returns: book it first (module docstring)
                cost = await accountant.settle_before_end(
                    exchange.ticket, planned, runtime, target, exchange.outcome.usage,
                    metrics=metrics, route=f.route.name, policy=f.policy,
                    unknown_tries=unknown)
            else:
                cost = accountant.settle_later(
                    exchange.ticket, planned, runtime, target,
                    exchange.outcome.usage if answered else None, metrics=metrics,
                    route=f.route.name, policy=f.policy, abandoned=abandoned,
                    unknown_tries=unknown)
            record.cost_usd = cost + planned.usd * len(exchange.top_ups)
