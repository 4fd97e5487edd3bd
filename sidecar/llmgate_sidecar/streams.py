"""A committed stream: the upstream stream after its first chunk went to the client.

Routing hands one to the writer once the first chunk is in; from then on failures cannot
fall back. Every read is bounded by the idle gap and the route deadline; a gateway shutdown
ends a read promptly (a client that goes away cancels the handler, see `app.api_runner`);
closing is idempotent and always closes the upstream. `translate` turns upstream events
into `StreamItem`s through a decoder.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from llmgate_contract.config import Target

from llmgate_sidecar.errors import UpstreamError
from llmgate_sidecar.providers.base import StreamDecoder, StreamItem


class StreamInterrupted(Exception):
    """The gateway ended a committed stream itself (shutdown grace over)."""


class CommittedStream:
    """The rest of a committed stream. Every read is bounded by the idle gap and the route
    deadline; `interrupt()` ends a read at once (shutdown); `aclose()` (always called by the
    writer) closes the upstream and is idempotent, also for a stream never iterated."""

    __slots__ = ("_closed", "_consumer", "_deadline_at", "_first", "_idle", "_interrupted",
                 "_items", "_on_close", "_on_error", "_pulling", "_target")

    def __init__(self, first: StreamItem, items: AsyncIterator[StreamItem], target: Target, *,
                 idle: float, deadline_at: float | None,
                 on_error: Callable[[UpstreamError], None],
                 on_close: Callable[[], None]) -> None:
        self._first: StreamItem | None = first
        self._items, self._target = items, target
        self._idle, self._deadline_at = idle, deadline_at
        self._on_error, self._on_close = on_error, on_close
        self._closed = self._pulling = self._interrupted = False
        self._consumer: asyncio.Task[Any] | None = None

    def interrupt(self) -> None:
        """Make the current or next read raise StreamInterrupted."""
        self._interrupted = True
        # Only a read parked in `_pull` is cancelled; a writer in progress finds out itself.
        if self._pulling and self._consumer is not None:
            self._consumer.cancel()

    def __aiter__(self) -> CommittedStream:
        return self

    async def __anext__(self) -> StreamItem:
        if self._first is not None:
            item, self._first = self._first, None
            return item
        if self._closed:
            raise StopAsyncIteration
        if self._interrupted:
            raise StreamInterrupted("the gateway is shutting down")
        self._consumer = asyncio.current_task()
        self._pulling = True
        try:
            return await self._pull()
        except UpstreamError as exc:
            self._on_error(exc)
            raise
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not self._interrupted or task is None or task is not self._consumer:
                raise
            task.uncancel()  # our own cancel: say why instead of cancelling the handler
            raise StreamInterrupted("the gateway is shutting down") from None
        finally:
            self._pulling = False

    async def _pull(self) -> StreamItem:
        timeout, why = self._idle, f"no data from upstream for {self._idle:g}s"
        if self._deadline_at is not None:
            remaining = self._deadline_at - asyncio.get_running_loop().time()
            if remaining < timeout:
                timeout, why = remaining, "the route's timeout passed mid-stream"
        t = self._target
        if timeout <= 0:
            raise UpstreamError("timeout", f"{t.provider}: {why}", provider=t.provider,
                                model=t.model)
        try:
            async with asyncio.timeout(timeout):
                return await anext(self._items)
        except TimeoutError:
            raise UpstreamError("timeout", f"{t.provider}: {why}", provider=t.provider,
                                model=t.model) from None

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._items.aclose()  # type: ignore[attr-defined]
        finally:
            self._on_close()


async def translate(events: AsyncIterator[Any], decoder: StreamDecoder
                     ) -> AsyncIterator[StreamItem]:
    try:
        async for event in events:
            item = decoder.feed(event)
            if item.downstream or item.usage or item.done:
                yield item
        yield decoder.finish()
    finally:
        await events.aclose()  # type: ignore[attr-defined]
