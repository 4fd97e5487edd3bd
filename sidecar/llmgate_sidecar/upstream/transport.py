"""Upstream I/O: one connection pool per provider, and the in-process `mock` model.

`Transports` (owned by the app, closed on cleanup) hands out one `HttpTransport` per provider
account (an aiohttp session with its own keep-alive pool), or a `MockTransport` for the
built-in `mock` provider. Network failures become classified `UpstreamError`s here; status
codes are left to the adapters. Nothing here knows a provider's wire format. Every read is
bounded (`Bounds`): the decompressed size of a whole answer, of an error body, of one
stream event; the wait for each next byte (the whole wait for response headers is bounded
by routing, the only caller, with the same `Bounds.first_byte`). A hostile upstream
gets a `malformed` or `timeout` error, never the sidecar's memory or time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from llmgate_contract.config import Provider
from llmgate_contract.providers import KINDS

from llmgate_sidecar.errors import UpstreamError
from llmgate_sidecar.upstream.mock import MockTransport
from llmgate_sidecar.upstream.providers.base import UpstreamRequest
from llmgate_sidecar.upstream.tls import context_for
from llmgate_sidecar.wire.eventstream import EventStreamError, EventStreamParser
from llmgate_sidecar.wire.sse import Event, SSEError, SSEParser

EVENTSTREAM_TYPE = "application/vnd.amazon.eventstream"
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Bounds:
    """What one upstream answer may cost the sidecar (docs/limits.md has the table)."""

    body_bytes: int = 8 * MIB
    """Largest whole (non-streamed) answer, after decompression; above it: 502."""
    error_bytes: int = 64 * 1024
    """Bytes of an error answer read to classify it; the rest is never read."""
    event_bytes: int = 1 * MIB
    """Largest stream line or event; above it the stream ends with an in-band error."""
    first_byte: float = 300.0
    """Seconds to wait for response headers (a whole non-streamed answer comes with them)
    when the target sets no `timeout`."""
    idle: float = 120.0
    """Longest silence of a committed stream when the target sets no `timeout`."""
    request: float = 900.0
    """Whole-request deadline (every attempt, retry and stream chunk) when the route sets no
    `timeout`."""


class UpstreamResponse(Protocol):
    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    async def read(self) -> bytes:
        """The whole body, or `UpstreamError("malformed")` when it exceeds the bound."""
        ...

    async def head(self, limit: int) -> bytes:
        """At most `limit` bytes of the body (an error answer), then the response is closed."""
        ...

    def events(self) -> AsyncIterator[Event]: ...

    def chunks(self) -> AsyncIterator[bytes]: ...

    def release(self) -> None: ...


class Transport(Protocol):
    async def send(self, request: UpstreamRequest, *, timeout: float | None,
                   provider: str, model: str) -> UpstreamResponse: ...

    async def close(self) -> None: ...


class HttpResponse:
    __slots__ = ("_bounds", "_provider", "_response", "backlog", "headers", "model", "status")

    def __init__(self, response: aiohttp.ClientResponse, provider: str, model: str,
                 bounds: Bounds) -> None:
        self._response = response
        self.status = response.status
        self.headers = response.headers
        self._provider, self.model = provider, model
        self._bounds = bounds
        # Events already read and parsed but not yet taken from `events()`: while it is above
        # 0 the next event comes without waiting on the network (see streams.Translated).
        self.backlog = 0

    async def read(self) -> bytes:
        return await self._read(self._bounds.body_bytes, truncate=False)

    async def head(self, limit: int) -> bytes:
        return await self._read(min(limit, self._bounds.error_bytes), truncate=True)

    async def _read(self, limit: int, *, truncate: bool) -> bytes:
        # aiohttp inflates a compressed body a bounded piece at a time as it is read, so
        # counting what comes out bounds a gzip bomb as well as a plain giant body.
        parts: list[bytes] = []
        size = 0
        try:
            async for piece in self._response.content.iter_any():
                size += len(piece)
                if size > limit:
                    if truncate:
                        parts.append(piece[:len(piece) - (size - limit)])
                        break
                    raise UpstreamError(
                        "malformed", f"{self._provider}: the answer is larger than {limit} "
                        f"bytes", provider=self._provider, model=self.model)
                parts.append(piece)
        except UpstreamError:
            raise
        except Exception as exc:
            raise network_error(exc, self._provider, self.model) from exc
        finally:
            # An answer read only in part cannot go back to the pool.
            self._response.close() if size > limit else self._response.release()
        return b"".join(parts)

    async def events(self) -> AsyncIterator[Event]:
        # Bedrock's ConverseStream frames events in AWS event-stream binary, not SSE.
        limit = self._bounds.event_bytes
        parser: SSEParser | EventStreamParser = (
            EventStreamParser(max_frame=limit)
            if self._response.content_type == EVENTSTREAM_TYPE else SSEParser(max_event=limit))
        try:
            async for chunk in self._response.content.iter_any():
                events = parser.feed(chunk)
                for index, event in enumerate(events, 1):
                    self.backlog = len(events) - index
                    yield event
            events = parser.close()
            for index, event in enumerate(events, 1):
                self.backlog = len(events) - index
                yield event
        except UpstreamError:
            raise
        except (EventStreamError, SSEError) as exc:
            raise UpstreamError("malformed", f"{self._provider}: {exc}",
                                provider=self._provider, model=self.model) from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise network_error(exc, self._provider, self.model) from exc
        finally:
            self._response.close()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The raw body as it arrives (binary answers such as audio), never buffered whole."""
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise network_error(exc, self._provider, self.model) from exc
        finally:
            self._response.close()

    def release(self) -> None:
        self._response.close()


class HttpTransport:
    """One provider account's connection pool."""

    def __init__(self, *, limit: int = 256, bounds: Bounds | None = None) -> None:
        self._bounds = bounds or Bounds()
        connector = aiohttp.TCPConnector(limit=limit, ttl_dns_cache=300,
                                         enable_cleanup_closed=True)
        self._timeouts: dict[float | None, aiohttp.ClientTimeout] = {}  # bounded: per target
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True,
                                              skip_auto_headers=("User-Agent",),
                                              timeout=aiohttp.ClientTimeout(total=None))

    async def send(self, request: UpstreamRequest, *, timeout: float | None,
                   provider: str, model: str) -> UpstreamResponse:
        # The target's `timeout` bounds connecting and every wait for bytes (first byte, and
        # each gap mid-stream), so a stalled stream fails instead of hanging; without one the
        # defaults in `Bounds` apply. The whole wait for the response head (`first_byte`:
        # also a head trickled a byte at a time) and the whole-request deadline are bounded
        # by the caller (routing, `Router._send`), with one timer per attempt.
        # aiohttp's read timeout also covers the wait for headers, so it cannot be shorter
        # than the first-byte bound; a committed stream enforces its own idle gap.
        # https: the sidecar's verified context (upstream.tls), loaded at the first one.
        tls = await context_for(request.url)
        try:
            response = await self._session.request(
                request.method, request.url, data=request.body, headers=request.headers,
                timeout=self._client_timeout(timeout), allow_redirects=False, ssl=tls)
        except Exception as exc:
            raise network_error(exc, provider, model) from exc
        return HttpResponse(response, provider, model, self._bounds)

    def _client_timeout(self, timeout: float | None) -> aiohttp.ClientTimeout:
        """aiohttp's connect and read timeouts for a target `timeout` (one per value)."""
        client_timeout = self._timeouts.get(timeout)
        if client_timeout is None:
            bounds = self._bounds
            client_timeout = self._timeouts[timeout] = aiohttp.ClientTimeout(
                total=None, sock_connect=timeout or bounds.first_byte,
                sock_read=timeout or max(bounds.first_byte, bounds.idle))
        return client_timeout

    async def close(self) -> None:
        await self._session.close()


def network_error(exc: BaseException, provider: str, model: str) -> UpstreamError:
    if isinstance(exc, UpstreamError):
        return exc
    # Connecting failed (refused, DNS, connect timeout): the request was never sent.
    unsent = isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError))
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)) and not unsent:
        return UpstreamError("timeout", f"{provider}: upstream timed out", provider=provider,
                             model=model)
    what = type(exc).__name__
    return UpstreamError("connectionError", f"{provider}: connection failed ({what})",
                         provider=provider, model=model, unsent=unsent)


class Transports:
    """Keeps one transport per provider account across config reloads."""

    def __init__(self, bounds: Bounds | None = None) -> None:
        self._by_key: dict[tuple[str, str, str, str], Transport] = {}
        self.bounds = bounds or Bounds()

    def for_provider(self, provider: Provider) -> Transport:
        # Credentials are not part of the key: a rotated key reuses the warm pool.
        mock = provider.mock.to_json() if provider.mock else ""
        key = (provider.name, provider.kind, provider.base_url or "", mock)
        transport = self._by_key.get(key)
        if transport is None:
            if KINDS[provider.kind].in_process:
                transport = MockTransport(provider.mock)
            else:
                transport = HttpTransport(bounds=self.bounds)
            self._by_key[key] = transport
        return transport

    async def close(self) -> None:
        transports, self._by_key = list(self._by_key.values()), {}
        for transport in transports:
            await transport.close()
