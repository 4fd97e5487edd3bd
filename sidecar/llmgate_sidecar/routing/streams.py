"""A committed stream: the upstream stream after its first chunk went to the client.

Routing hands one to the writer once the first chunk is in; from then on failures cannot
fall back. Every read is bounded by the idle gap and the route deadline; a gateway shutdown
ends a read promptly (a client that goes away cancels the handler, see `app.api_runner`);
closing is idempotent and always closes the upstream. `translate` turns upstream events
into `StreamItem`s through a decoder.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from llmgate_contract.config import Target

from llmgate_sidecar.errors import UpstreamError
from llmgate_sidecar.upstream.providers.base import StreamDecoder, StreamItem, checked


class StreamInterrupted(Exception):
    """The gateway ended a committed stream itself (shutdown grace over)."""


class CommittedStream:
    """The rest of a committed stream. Every read is bounded by the idle gap and the route
    deadline; `interrupt()` ends a read at once (shutdown); `aclose()` (always called by the
    writer) closes the upstream and is idempotent, also for a stream never iterated."""

    __slots__ = ("_closed", "_consumer", "_deadline_at", "_expires", "_first", "_idle",
                 "_interrupted", "_items", "_on_close", "_on_error", "_pulling", "_target",
                 "_timed_out", "_timer", "_why")

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
        # The read watchdog: one timer per stream, re-armed only when it fires early, instead
        # of a timer per chunk (an `asyncio.timeout` per read was ~7% of a streaming request).
        self._timer: asyncio.TimerHandle | None = None
        self._expires = 0.0  # loop time by which the read under way must have an item
        self._why = ""
        self._timed_out = False

    def interrupt(self) -> None:
        """Make the current or next read raise StreamInterrupted."""
        self._interrupted = True
        # Only a read parked in `_pull` is cancelled; a writer in progress finds out itself.
        if self._pulling and self._consumer is not None:
            self._consumer.cancel()

    @property
    def backlog(self) -> int:
        """How many items can be taken now without waiting on the upstream."""
        if self._first is not None:
            return 1
        return int(getattr(self._items, "backlog", 0))

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
        loop = asyncio.get_running_loop()
        now = loop.time()
        timeout, why = self._idle, "idle"
        if self._deadline_at is not None and self._deadline_at - now < timeout:
            timeout, why = self._deadline_at - now, "deadline"
        if timeout <= 0:
            raise self._timeout_error(why)
        self._expires, self._why, self._timed_out = now + timeout, why, False
        if self._timer is None or self._timer.when() > self._expires:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(self._expires, self._watch)
        try:
            return await anext(self._items)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not self._timed_out or self._interrupted or task is None:
                raise
            self._timed_out = False
            if task.uncancel() > 0:
                raise  # cancelled by someone else as well: that wins, as with asyncio.timeout
            raise self._timeout_error(self._why) from None

    def _watch(self) -> None:
        """The watchdog fired: cancel a read that is past its time, else re-arm for it."""
        self._timer = None
        if self._closed or not self._pulling or self._consumer is None:
            return  # between reads: the next read arms a new timer
        loop = asyncio.get_running_loop()
        if loop.time() < self._expires:
            self._timer = loop.call_at(self._expires, self._watch)
            return
        self._timed_out = True
        self._consumer.cancel()

    def _timeout_error(self, why: str) -> UpstreamError:
        t = self._target
        text = (f"no data from upstream for {self._idle:g}s" if why == "idle"
                else "the route's timeout passed mid-stream")
        return UpstreamError("timeout", f"{t.provider}: {text}", provider=t.provider,
                             model=t.model)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            await self._items.aclose()  # type: ignore[attr-defined]
        finally:
            self._on_close()


class Translated:
    """Upstream events decoded into `StreamItem`s (what the old `translate` generator did),
    decoding ahead every event already read from the network: `backlog` then tells the
    writer that the next item is at hand, so it can send several in one write instead of
    one write (and one syscall) per event. Never reads ahead from the network itself."""

    __slots__ = ("_decoder", "_done", "_error", "_events", "_ready", "_source")

    def __init__(self, events: AsyncIterator[Any], decoder: StreamDecoder,
                 source: object = None) -> None:
        self._events, self._decoder = events, decoder
        # What `events` reads from; its `backlog` (if it has one) counts events already read.
        self._source = source
        self._ready: deque[StreamItem] = deque()
        self._done = False
        self._error: BaseException | None = None

    @property
    def backlog(self) -> int:
        """Items decoded and waiting: taking the next one will not wait for the network."""
        return len(self._ready)

    def __aiter__(self) -> Translated:
        return self

    async def __anext__(self) -> StreamItem:
        ready = self._ready
        # Decode until an item is ready and nothing more is already read (no wait added).
        while not self._done and self._error is None and (
                not ready or getattr(self._source, "backlog", 0) > 0):
            try:
                try:
                    event = await anext(self._events)
                except StopAsyncIteration:
                    ready.append(self._decoder.finish())
                    self._done = True
                    break
                item = self._decoder.feed(event)  # raises on an upstream error event
                checked(item.usage)
            except Exception as exc:
                if not ready:
                    raise
                self._error = exc  # raised after the items decoded before it went out
                break
            if item.downstream or item.usage or item.done:
                ready.append(item)
            if item.done:
                # The answer is complete: whatever the upstream sends after its end marker
                # (Cohere's `data: [DONE]` after message-end) is not decoded, so it cannot
                # turn a finished answer into an in-band error.
                self._done = True
                break
        if ready:
            return ready.popleft()
        if self._error is not None:
            error, self._error = self._error, None
            self._done = True
            raise error
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self._done = True
        await self._events.aclose()  # type: ignore[attr-defined]


def translate(events: AsyncIterator[Any], decoder: StreamDecoder,
              source: object = None) -> Translated:
    return Translated(events, decoder, source)
