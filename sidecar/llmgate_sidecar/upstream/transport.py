"""Upstream I/O: one connection pool per provider, and the in-process `mock` model.

`Transports` (owned by the app, closed on cleanup) hands out one `HttpTransport` per provider
account (an aiohttp session with its own keep-alive pool), or a `MockTransport` for the
built-in `mock` provider. Network failures become classified `UpstreamError`s here; status
codes are left to the adapters. Nothing here knows a provider's wire format.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Protocol

import aiohttp
from llmgate_contract.config import Provider
from llmgate_contract.providers import KINDS

from llmgate_sidecar.errors import UpstreamError
from llmgate_sidecar.upstream.mock import MockTransport
from llmgate_sidecar.upstream.providers.base import UpstreamRequest
from llmgate_sidecar.wire.eventstream import EventStreamError, EventStreamParser
from llmgate_sidecar.wire.sse import Event, SSEParser

EVENTSTREAM_TYPE = "application/vnd.amazon.eventstream"


class UpstreamResponse(Protocol):
    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    async def read(self) -> bytes: ...

    def events(self) -> AsyncIterator[Event]: ...

    def chunks(self) -> AsyncIterator[bytes]: ...

    def release(self) -> None: ...


class Transport(Protocol):
    async def send(self, request: UpstreamRequest, *, timeout: float | None,
                   provider: str, model: str) -> UpstreamResponse: ...

    async def close(self) -> None: ...


class HttpResponse:
    __slots__ = ("_provider", "_response", "backlog", "headers", "model", "status")

    def __init__(self, response: aiohttp.ClientResponse, provider: str, model: str) -> None:
        self._response = response
        self.status = response.status
        self.headers = response.headers
        self._provider, self.model = provider, model
        # Events already read and parsed but not yet taken from `events()`: while it is above
        # 0 the next event comes without waiting on the network (see streams.Translated).
        self.backlog = 0

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except Exception as exc:
            raise network_error(exc, self._provider, self.model) from exc
        finally:
            self._response.release()

    async def events(self) -> AsyncIterator[Event]:
        # Bedrock's ConverseStream frames events in AWS event-stream binary, not SSE.
        parser: SSEParser | EventStreamParser = (
            EventStreamParser() if self._response.content_type == EVENTSTREAM_TYPE
            else SSEParser())
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
        except EventStreamError as exc:
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

    def __init__(self, *, limit: int = 256) -> None:
        connector = aiohttp.TCPConnector(limit=limit, ttl_dns_cache=300,
                                         enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True,
                                              skip_auto_headers=("User-Agent",),
                                              timeout=aiohttp.ClientTimeout(total=None))

    async def send(self, request: UpstreamRequest, *, timeout: float | None,
                   provider: str, model: str) -> UpstreamResponse:
        # `timeout` bounds connecting and every wait for bytes (first byte, and each gap
        # mid-stream), so a stalled stream fails instead of hanging; the whole-request
        # deadline is routing's.
        client_timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout,
                                               sock_read=timeout)
        try:
            response = await self._session.request(
                request.method, request.url, data=request.body, headers=request.headers,
                timeout=client_timeout, allow_redirects=False)
        except Exception as exc:
            raise network_error(exc, provider, model) from exc
        return HttpResponse(response, provider, model)

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

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str, str, str], Transport] = {}

    def for_provider(self, provider: Provider) -> Transport:
        # Credentials are not part of the key: a rotated key reuses the warm pool.
        mock = provider.mock.model_dump_json() if provider.mock else ""
        key = (provider.name, provider.kind, provider.base_url or "", mock)
        transport = self._by_key.get(key)
        if transport is None:
            if KINDS[provider.kind].in_process:
                transport = MockTransport(provider.mock)
            else:
                transport = HttpTransport()
            self._by_key[key] = transport
        return transport

    async def close(self) -> None:
        transports, self._by_key = list(self._by_key.values()), {}
        for transport in transports:
            await transport.close()
