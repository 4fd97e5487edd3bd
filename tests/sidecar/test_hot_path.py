"""The hot-path shortcuts keep their guarantees: the stream read watchdog, cached metric
children, and settling in place with the in-memory store.

Each shortcut replaced a per-request or per-chunk cost (bench/README.md, docs/performance.md);
these tests pin what the slower code guaranteed: a stalled or overdue committed stream still
ends with a timeout, a long healthy one is never cut, a cancel from outside still cancels,
metric children still count where Prometheus sees them, and a settled request is booked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from llmgate_contract.config import Budget, Limits, Target, VirtualKey
from llmgate_sidecar.errors import UpstreamError
from llmgate_sidecar.observability.metrics import Metrics
from llmgate_sidecar.policy.accounting import Accountant, Reservation
from llmgate_sidecar.policy.limits import Limiter
from llmgate_sidecar.policy.store import MemoryStore, Ticket
from llmgate_sidecar.routing.streams import CommittedStream, StreamInterrupted, translate
from llmgate_sidecar.upstream.providers.base import StreamItem, Usage

TARGET = Target(provider="p", model="m")


async def paced(count: int, gap: float, stall_after: int | None = None
                ) -> AsyncIterator[StreamItem]:
    for index in range(count):
        if stall_after is not None and index == stall_after:
            await asyncio.sleep(3600)
        await asyncio.sleep(gap)
        yield StreamItem(downstream=f"{index}".encode())


def committed(items: AsyncIterator[StreamItem], *, idle: float,
              deadline_in: float | None = None) -> tuple[CommittedStream, list[str]]:
    events: list[str] = []
    loop = asyncio.get_running_loop()
    stream = CommittedStream(
        StreamItem(downstream=b"first"), items, TARGET, idle=idle,
        deadline_at=None if deadline_in is None else loop.time() + deadline_in,
        on_error=lambda exc: events.append(exc.error_class),
        on_close=lambda: events.append("closed"))
    return stream, events


async def test_a_healthy_stream_longer_than_the_idle_timeout_is_never_cut() -> None:
    # 30 gaps of 10 ms = ~0.3 s against a 0.1 s idle bound: the watchdog must re-arm.
    stream, events = committed(paced(30, 0.01), idle=0.1)
    got = [item.downstream async for item in stream]
    await stream.aclose()
    assert got == [b"first", *(f"{i}".encode() for i in range(30))]
    assert events == ["closed"]


async def test_a_stall_after_some_chunks_ends_with_a_timeout_and_reports_it() -> None:
    stream, events = committed(paced(10, 0.001, stall_after=3), idle=0.1)
    got = []
    with pytest.raises(UpstreamError) as raised:
        async for item in stream:
            got.append(item.downstream)
    await stream.aclose()
    assert got == [b"first", b"0", b"1", b"2"]
    assert raised.value.error_class == "timeout"
    assert "no data from upstream for 0.1s" in raised.value.message
    assert events == ["timeout", "closed"]


async def test_the_route_deadline_ends_a_stream_that_keeps_sending() -> None:
    stream, _ = committed(paced(10_000, 0.01), idle=30.0, deadline_in=0.15)
    with pytest.raises(UpstreamError) as raised:
        async for _item in stream:
            pass
    await stream.aclose()
    assert "the route's timeout passed mid-stream" in raised.value.message


async def test_a_cancel_from_outside_still_cancels_the_reader() -> None:
    stream, _ = committed(paced(10, 0.001, stall_after=1), idle=0.05)
    await anext(stream)

    async def read_all() -> None:
        async for _item in stream:
            pass

    reader = asyncio.create_task(read_all())
    await asyncio.sleep(0.01)  # parked in a read
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    await stream.aclose()
    await asyncio.sleep(0.1)  # past the idle bound: the watchdog must be gone, not fire
    assert reader.cancelled()


async def test_interrupt_during_a_read_raises_stream_interrupted() -> None:
    stream, _ = committed(paced(10, 0.001, stall_after=1), idle=30.0)
    await anext(stream)
    await anext(stream)

    async def next_item() -> StreamItem:
        return await anext(stream)

    reader = asyncio.create_task(next_item())
    await asyncio.sleep(0.01)
    stream.interrupt()
    with pytest.raises(StreamInterrupted):
        await reader
    await stream.aclose()


def test_cached_metric_children_count_where_prometheus_reads_them() -> None:
    metrics = Metrics()
    for _ in range(3):
        metrics.requests.labels("r", "p", "m", "k", "2xx").inc()
    metrics.overhead.labels("false").observe(0.001)
    value = metrics.registry.get_sample_value(
        "llmgate_requests_total", {"route": "r", "provider": "p", "model": "m",
                                   "virtual_key": "k", "status_class": "2xx"})
    count = metrics.registry.get_sample_value("llmgate_gateway_overhead_seconds_count",
                                              {"stream": "false"})
    assert (value, count) == (3.0, 1.0)
    with pytest.raises(ValueError):
        metrics.requests.labels("too", "few")  # still validated on first use


def budgeted_key() -> VirtualKey:
    return VirtualKey(name="k", limits=Limits(max_parallel=1),
                      budget=Budget(limit=Decimal("1.00"), period="none"))


async def test_in_memory_settlement_is_booked_before_settle_later_returns() -> None:
    store = MemoryStore()
    accountant = Accountant(Limiter(store))
    key = budgeted_key()
    planned = Reservation(10, 10, Decimal("0.10"))
    ticket = await accountant.limiter.admit(key, namespace="ns", estimated_tokens=20,
                                            reserve_usd=planned.usd)
    assert accountant.limiter.settles_now
    accountant.settle_later(ticket, planned, _runtime(), None, None, abandoned=True)
    spend = await store.spend("ns/k", "none")
    # Booked in place: the reservation is released (the slot frees) and its cost counted.
    assert (spend.spent_micros, spend.reserved_micros) == (100_000, 0)
    assert await accountant.limiter.admit(key, namespace="ns", estimated_tokens=1,
                                          reserve_usd=Decimal("0.01"))
    await accountant.drain()


async def test_a_store_overriding_settle_is_still_settled_through_its_override() -> None:
    calls: list[str] = []

    class Recording(MemoryStore):
        async def settle(self, ticket: Ticket, *, tokens: int, cost_micros: int) -> bool:
            calls.append(ticket.id)
            return await super().settle(ticket, tokens=tokens, cost_micros=cost_micros)

    accountant = Accountant(Limiter(Recording()))
    key = budgeted_key()
    ticket = await accountant.limiter.admit(key, namespace="ns", estimated_tokens=1,
                                            reserve_usd=Decimal("0.01"))
    assert not accountant.limiter.settles_now
    accountant.settle_later(ticket, Reservation(1, 0, Decimal("0.01")), _runtime(), None,
                            Usage(), abandoned=True)
    await accountant.drain()
    assert calls == [ticket.id]


class _Runtime:
    namespace = "ns"
    upstreams: dict[str, object] = {}


def _runtime() -> object:
    return _Runtime()


class _Source:
    """Upstream events in reads: a read's events come at once (`backlog` counts the rest of
    the read), the next read waits for `gate` when one is given."""

    def __init__(self, reads: list[list[str]], gate: asyncio.Event | None = None) -> None:
        self.reads, self.gate, self.backlog = reads, gate, 0

    async def events(self) -> AsyncIterator[str]:
        for number, read in enumerate(self.reads):
            if number and self.gate is not None:
                await self.gate.wait()
            for index, event in enumerate(read, 1):
                self.backlog = len(read) - index
                yield event


class _Decoder:
    def feed(self, event: str) -> StreamItem:
        if event == "error":
            raise UpstreamError("serverError", "upstream error event")
        return StreamItem(downstream=event.encode()) if event != "ping" else StreamItem()

    def finish(self) -> StreamItem:
        return StreamItem(done=True)


async def test_events_already_read_are_decoded_ahead_and_counted() -> None:
    source = _Source([["a", "ping", "b", "c"], ["d"]])
    items = translate(source.events(), _Decoder(), source)  # type: ignore[arg-type]
    assert (await anext(items)).downstream == b"a"
    assert items.backlog == 2  # b and c are at hand; the ping made nothing
    rest = [item async for item in items]
    assert [i.downstream for i in rest] == [b"b", b"c", b"d", b""] and rest[-1].done


async def test_an_item_is_never_held_back_waiting_for_the_next_read() -> None:
    gate = asyncio.Event()
    source = _Source([["a"], ["b"]], gate)
    items = translate(source.events(), _Decoder(), source)  # type: ignore[arg-type]
    # Would hang (and time out) if decoding ahead waited on the network for "b".
    first = await asyncio.wait_for(anext(items), 5)
    assert (first.downstream, items.backlog) == (b"a", 0)
    gate.set()
    assert (await anext(items)).downstream == b"b"


async def test_items_before_an_upstream_error_in_the_same_read_go_out_first() -> None:
    source = _Source([["a", "b", "error", "c"]])
    items = translate(source.events(), _Decoder(), source)  # type: ignore[arg-type]
    got = [(await anext(items)).downstream, (await anext(items)).downstream]
    with pytest.raises(UpstreamError):
        await anext(items)
    assert got == [b"a", b"b"]
    await items.aclose()


async def test_committed_stream_reports_the_backlog_of_what_it_wraps() -> None:
    source = _Source([["a", "b"]])
    items = translate(source.events(), _Decoder(), source)  # type: ignore[arg-type]
    stream, _ = committed(items, idle=30.0)
    assert stream.backlog == 1  # the first item, in hand
    await anext(stream)
    assert (await anext(stream)).downstream == b"a" and stream.backlog == 1  # b is at hand
    await stream.aclose()
