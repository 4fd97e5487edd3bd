"""Writing a committed chat answer downstream: JSON, SSE chunk by chunk, or a cached replay.

Called by the chat endpoints (`api.endpoints`) once routing committed an upstream answer (or
the cache hit); `Outcome` is what a reply learnt, read by the lifecycle to settle and log.
Everything leaves through the request's `Dialect`, so the OpenAI and the Anthropic APIs
share this code. After the first byte of a stream nothing can fall back: an upstream failure
ends the stream with the dialect's in-band error event, never a clean-looking end.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from llmgate_contract.config import Route, VirtualKey

from llmgate_sidecar.api.dialects import Dialect, StreamTranslator
from llmgate_sidecar.api.state import METRICS, REQUEST_ID
from llmgate_sidecar.cache.response import CACHE_HEADER, HIT_HEADER, Hit, Recorder
from llmgate_sidecar.errors import UpstreamError
from llmgate_sidecar.observability.metrics import Metrics
from llmgate_sidecar.policy.store import Ticket, micros_to_usd
from llmgate_sidecar.routing.router import Served
from llmgate_sidecar.routing.streams import StreamInterrupted
from llmgate_sidecar.upstream.providers.base import Usage

log = logging.getLogger("llmgate.request")
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
               "X-Accel-Buffering": "no"}


@dataclass(slots=True)
class Outcome:
    """What a reply learnt as it wrote: filled by the endpoint's reply, read by the lifecycle."""

    status_class: str = "2xx"  # "5xx": ended by a failure in-band; "499": the client left
    usage: Usage | None = None
    overhead: float | None = None  # seconds spent in the gateway before the answer went out
    # Run once, right before the end of a streamed answer is written (the lifecycle books a
    # near-limit key's cost there); `end` runs it.
    before_end: Callable[[], Awaitable[None]] | None = None

    async def end(self) -> None:
        hook, self.before_end = self.before_end, None
        if hook is not None:
            await hook()


def response_headers(request: web.Request, route: Route, served: Served,
                     ticket: Ticket | None = None) -> dict[str, str]:
    headers = {"x-request-id": request[REQUEST_ID], "x-llmgate-route": route.name,
               "x-llmgate-provider": served.target.provider,
               "x-llmgate-model": served.target.model,
               "x-llmgate-attempts": str(served.attempts), CACHE_HEADER: "off"}
    if ticket is not None:
        headers.update(limit_headers(ticket))
    return headers


def limit_headers(ticket: Ticket) -> dict[str, str]:
    """What the key has left after this request was admitted, in OpenAI's header names
    (clients already read them) plus the budget; only for limits the key has."""
    headers = {}
    if ticket.remaining_requests is not None:
        headers["x-ratelimit-remaining-requests"] = str(ticket.remaining_requests)
    if ticket.remaining_tokens is not None:
        headers["x-ratelimit-remaining-tokens"] = str(ticket.remaining_tokens)
    if ticket.remaining_micros is not None:
        headers["x-llmgate-budget-remaining-usd"] = f"{micros_to_usd(ticket.remaining_micros):.6f}"
    return headers


async def reply_from_cache(request: web.Request, route: Route, hit: Hit, stream: bool,
                           include_usage: bool, dialect: Dialect) -> web.StreamResponse:
    """Answer from the cache: the stored JSON, or the recorded stream replayed as it was."""
    headers = {"x-request-id": request[REQUEST_ID], "x-llmgate-route": route.name,
               "x-llmgate-provider": "cache", "x-llmgate-model": hit.model,
               "x-llmgate-attempts": "0", CACHE_HEADER: HIT_HEADER}
    if not stream:
        return web.Response(body=dialect.completion(hit.entry.body),
                            content_type="application/json", headers=headers)
    response = web.StreamResponse(status=200, headers={**headers, **SSE_HEADERS})
    await response.prepare(request)
    translator = dialect.translator(hit.model)
    for event in hit.sse(include_usage=include_usage):
        out = translator.feed(event, None)
        if out:
            await response.write(out)
    tail = translator.finish()
    if tail:
        await response.write(tail)
    await response.write_eof()
    return response


def record_usage(metrics: Metrics, route: Route, served: Served, policy: VirtualKey,
                 usage: Usage | None) -> None:
    if usage is None or not usage.known:
        return
    labels = (route.name, served.target.provider, served.target.model, policy.name)
    metrics.tokens.labels(*labels, "input").inc(usage.prompt_tokens)
    metrics.tokens.labels(*labels, "output").inc(usage.completion_tokens)
    # Parts of `input`, priced apart: only counted when there were any (fewer series).
    if usage.cached_tokens:
        metrics.tokens.labels(*labels, "cache_read").inc(usage.cached_tokens)
    if usage.cache_write_tokens:
        metrics.tokens.labels(*labels, "cache_write").inc(usage.cache_write_tokens)


async def stream_out(request: web.Request, route: Route, served: Served,
                     headers: dict[str, str], started: float, dialect: Dialect,
                     outcome: Outcome, recorder: Recorder | None = None) -> web.StreamResponse:
    """Write the committed stream; the status class and usage learnt go into `outcome`.

    After the first byte nothing can fall back: an upstream failure (or a shutdown whose
    grace ran out) ends the stream with an in-band error event and no clean end; a client
    that goes away cancels this handler, which closes the upstream (see app.api_runner)."""
    metrics = request.app[METRICS]
    stream = served.stream
    assert stream is not None
    overhead = time.perf_counter() - started - served.upstream_seconds
    headers["x-llmgate-overhead-ms"] = f"{overhead * 1000:.3f}"
    metrics.overhead.labels("true").observe(overhead)
    outcome.overhead = overhead
    response = web.StreamResponse(status=200, headers={**headers, **SSE_HEADERS})
    translator = dialect.translator(served.target.model)
    first, error = True, None
    # Output of items that were already at hand when made: sent together with the last of
    # them in one write (one HTTP chunk, one syscall), never held while the upstream is
    # awaited, so no latency is added (see streams.Translated.backlog).
    pending: list[bytes] = []
    try:
        await response.prepare(request)
        async for item in stream:
            if recorder is not None:
                recorder.feed(item)
            out = translator.feed(item.downstream, item.usage) if item.downstream or \
                item.usage else b""
            if out:
                pending.append(out)
            if pending and (first or not stream.backlog):
                await response.write(b"".join(pending) if len(pending) > 1 else pending[0])
                pending.clear()
                if first:
                    metrics.ttft.labels(route.name, served.target.provider).observe(
                        time.perf_counter() - started)
                    first = False
            if item.usage is not None:
                outcome.usage = item.usage
        pending.append(translator.finish())
        rest = b"".join(pending)
        pending.clear()
        await outcome.end()
        if rest:
            await response.write(rest)
        await response.write_eof()
        if recorder is not None:
            await recorder.finish()  # stores only a complete stream; never raises
        return response
    except UpstreamError as exc:
        metrics.stream_errors.labels(route.name, exc.error_class).inc()
        metrics.upstream_errors.labels(served.target.provider, exc.error_class).inc()
        error = ("upstream_error", exc.error_class, f"upstream failed mid-stream: {exc.message}")
        outcome.status_class = "5xx"
        return response
    except (ConnectionResetError, ConnectionError):
        metrics.stream_errors.labels(route.name, "clientDisconnected").inc()
        outcome.status_class = "499"
        return response
    except StreamInterrupted:
        metrics.stream_errors.labels(route.name, "shutdown").inc()
        error = ("server_error", "shutdown", "the gateway is shutting down; stream cut short")
        outcome.status_class = "5xx"
        return response
    except asyncio.CancelledError:
        # aiohttp cancels the handler when its client disconnects, or at the end of a
        # shutdown's grace period; only the latter still has someone to tell.
        if request.transport is None or request.transport.is_closing():
            metrics.stream_errors.labels(route.name, "clientDisconnected").inc()
        else:
            metrics.stream_errors.labels(route.name, "cancelled").inc()
            error = ("server_error", "shutdown",
                     "the gateway is shutting down; stream cut short")
        raise
    except Exception:
        log.exception("stream failed", extra={"request_id": request.get(REQUEST_ID)})
        metrics.stream_errors.labels(route.name, "internal").inc()
        error = ("server_error", "internal_error", "internal gateway error mid-stream")
        outcome.status_class = "5xx"
        return response
    finally:
        await stream.aclose()
        if error is not None and response.prepared:
            # Committed already: tell the client in-band so no SDK mistakes this for success
            # (after what it was owed from before the failure).
            await _write_quietly(response, translator, error, pending)


async def _write_quietly(response: web.StreamResponse, translator: StreamTranslator,
                         error: tuple[str, str, str], pending: list[bytes]) -> None:
    try:
        await response.write(b"".join(pending) + translator.error(*error))
        await response.write_eof()
    except (ConnectionResetError, ConnectionError):
        pass
