"""The response cache, against the in-memory LRU and a real redis-server: hit, miss, partitions,
TTL, refresh/bypass, what is (not) stored, eviction bounds, Redis down = miss, and recorded
streams replayed byte for byte."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from llmgate_contract.config import Provider, Route, Target
from llmgate_sidecar.cache.backends import CacheBackend, MemoryBackend
from llmgate_sidecar.cache.redis_backend import RedisBackend
from llmgate_sidecar.cache.response import Entry, Hit, Plan, ResponseCache, directive
from llmgate_sidecar.upstream.providers.base import StreamItem, Usage
from llmgate_sidecar.upstream.providers.openai import OpenAIStreamDecoder
from llmgate_sidecar.wire.sse import Event

from tests.sidecar.conftest import FakeClock
from tests.sidecar.redis_server import RedisServer, free_port

BODY: dict[str, Any] = {"model": "chat", "temperature": 0.2,
                        "messages": [{"role": "user", "content": "What is 2+2?"}]}
COMPLETION = orjson.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "gpt-x",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "4"},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13}})


def route(**cache: Any) -> Route:
    return Route.from_data({
        "name": "chat", "model": "chat",
        "group": {"targets": [{"type": "target", "provider": "p", "model": "gpt-x"}]},
        "cache": {"mode": "exact", "ttl": 60, **cache}})


def plan_for(cache: ResponseCache, r: Route, body: dict[str, Any] = BODY, *, key: str = "alice",
             namespace: str = "team-a", metadata: dict[str, str] | None = None,
             headers: dict[str, str] | None = None, api: str = "chat") -> Plan:
    return cache.plan(r, body, namespace=namespace, key_name=key, metadata=metadata or {},
                      headers=headers or {}, api=api)


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
async def cache(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[ResponseCache]:
    backend: CacheBackend
    if request.param == "memory":
        backend = MemoryBackend(clock=clock)
    else:
        fixture = "redis_server" if request.param == "redis" else "redis_cluster"
        backend = RedisBackend.from_url(request.getfixturevalue(fixture).url)
        await backend.client.flushdb()
    response_cache = ResponseCache(backend)
    try:
        yield response_cache
    finally:
        await response_cache.aclose()


async def test_miss_then_hit_returns_the_stored_body_unchanged(cache: ResponseCache) -> None:
    plan = plan_for(cache, route())
    assert plan.header == "miss"
    assert await cache.lookup(plan) is None
    assert await cache.store_json(plan, COMPLETION)
    hit = await cache.lookup(plan_for(cache, route()))
    assert hit is not None and hit.entry.body == COMPLETION
    assert hit.usage.prompt_tokens == 12 and hit.usage.completion_tokens == 1
    assert (cache.stats.hits, cache.stats.misses, cache.stats.stores) == (1, 1, 1)


async def test_a_stored_completion_is_not_served_to_a_streaming_request(
        cache: ResponseCache) -> None:
    plan = plan_for(cache, route())
    await cache.store_json(plan, COMPLETION)
    assert await cache.lookup(plan_for(cache, route(), {**BODY, "stream": True}),
                              stream=True) is None


async def test_partition_by_virtual_key_namespace_and_metadata(cache: ResponseCache) -> None:
    by_key = route()
    await cache.store_json(plan_for(cache, by_key), COMPLETION)
    assert await cache.lookup(plan_for(cache, by_key, key="bob")) is None
    assert await cache.lookup(plan_for(cache, by_key, namespace="team-b")) is None
    assert await cache.lookup(plan_for(cache, by_key)) is not None

    by_ns = route(partitionBy=["namespace"])
    await cache.store_json(plan_for(cache, by_ns), COMPLETION)
    assert await cache.lookup(plan_for(cache, by_ns, key="bob")) is not None
    assert await cache.lookup(plan_for(cache, by_ns, namespace="team-b")) is None

    by_team = route(partitionBy=["metadata.team"])
    await cache.store_json(plan_for(cache, by_team, metadata={"team": "red"}), COMPLETION)
    assert await cache.lookup(plan_for(cache, by_team, key="bob",
                                       metadata={"team": "red", "x": "1"})) is not None
    assert await cache.lookup(plan_for(cache, by_team, metadata={"team": "blue"})) is None
    assert await cache.lookup(plan_for(cache, by_team)) is None


async def test_the_key_ignores_transport_fields_but_not_output_parameters(
        cache: ResponseCache) -> None:
    r = route()
    await cache.store_json(plan_for(cache, r), COMPLETION)
    same = {"messages": BODY["messages"], "temperature": 0.2, "model": "chat",
            "user": "u-17", "metadata": {"trace": "x"}, "stream_options": {"include_usage": True},
            "stream": False}
    assert await cache.lookup(plan_for(cache, r, same)) is not None
    for change in ({"temperature": 0.3}, {"top_p": 0.5}, {"seed": 7}, {"n": 2}, {"stop": ["x"]},
                   {"max_tokens": 5}, {"response_format": {"type": "json_object"}},
                   {"tools": [{"type": "function", "function": {"name": "f"}}]},
                   {"model": "chat-alias"}, {"stream": True},
                   {"messages": [{"role": "user", "content": "What is 2+3?"}]}):
        assert await cache.lookup(plan_for(cache, r, {**BODY, **change})) is None, change
    assert await cache.lookup(plan_for(cache, r, api="messages")) is None


async def test_a_target_change_in_the_config_starts_from_an_empty_cache(
        cache: ResponseCache) -> None:
    await cache.store_json(plan_for(cache, route()), COMPLETION)
    moved = Route.from_data({
        **route().to_data(),
        "group": {"targets": [{"type": "target", "provider": "p", "model": "gpt-y"}]}})
    assert await cache.lookup(plan_for(cache, moved)) is None


async def test_refresh_and_no_cache_skip_the_read_but_store(cache: ResponseCache) -> None:
    r = route()
    await cache.store_json(plan_for(cache, r), COMPLETION)
    for headers in ({"x-llmgate-cache": "refresh"}, {"Cache-Control": "no-cache"}):
        plan = plan_for(cache, r, headers=headers)
        assert plan.header == "refresh"
        assert await cache.lookup(plan) is None
    newer = COMPLETION.replace(b'"content":"4"', b'"content":"four"')
    assert await cache.store_json(plan_for(cache, r, headers={"x-llmgate-cache": "refresh"}),
                                  newer)
    hit = await cache.lookup(plan_for(cache, r))
    assert hit is not None and hit.entry.body == newer


async def test_bypass_and_no_store_skip_read_and_write(cache: ResponseCache) -> None:
    r = route()
    for headers in ({"x-llmgate-cache": "bypass"}, {"x-llmgate-cache": "no-store"},
                    {"Cache-Control": "no-store"}):
        plan = plan_for(cache, r, headers=headers)
        assert plan.header == "bypass" and not plan.read
        assert await cache.store_json(plan, COMPLETION) is False
        assert cache.recorder(plan) is None
    assert await cache.lookup(plan_for(cache, r)) is None
    off = plan_for(cache, route(mode="off"))
    assert off.header == "off" and await cache.store_json(off, COMPLETION) is False


async def test_only_complete_successful_answers_are_stored(cache: ResponseCache) -> None:
    r = route()
    unfinished = COMPLETION.replace(b'"finish_reason":"stop"', b'"finish_reason":null')
    assert not await cache.store_json(plan_for(cache, r), unfinished)
    assert not await cache.store_json(plan_for(cache, r), b'{"error":{"message":"x"}}')
    assert not await cache.store_json(plan_for(cache, r), b"not json")
    assert await cache.lookup(plan_for(cache, r)) is None
    assert cache.stats.not_stored == 3


def test_directive_parsing() -> None:
    assert directive({}) == "use"
    assert directive({"Cache-Control": "max-age=0, No-Cache"}) == "refresh"
    assert directive({"x-llmgate-cache": " BYPASS "}) == "bypass"


# --- TTL ---------------------------------------------------------------------------------

async def test_memory_entries_expire_after_the_route_ttl(clock: FakeClock) -> None:
    cache = ResponseCache(MemoryBackend(clock=clock))
    r = route(ttl=30)
    await cache.store_json(plan_for(cache, r), COMPLETION)
    clock.advance(29.9)
    assert await cache.lookup(plan_for(cache, r)) is not None
    clock.advance(0.2)
    assert await cache.lookup(plan_for(cache, r)) is None


async def test_redis_entries_carry_the_route_ttl(redis_server: RedisServer) -> None:
    backend = RedisBackend.from_url(redis_server.url)
    cache = ResponseCache(backend)
    try:
        plan = plan_for(cache, route(ttl=45))
        await cache.store_json(plan, COMPLETION)
        redis_key = RedisBackend.redis_key(plan.key)
        assert redis_key == f"llmgate:cache:{{{plan.key}}}"
        assert 44_000 < await backend.client.pttl(redis_key) <= 45_000
        await backend.client.pexpireat(redis_key, 1)  # its deadline passes: Redis drops it
        assert await cache.lookup(plan) is None
    finally:
        await cache.aclose()


async def test_large_entries_are_compressed_in_redis(redis_server: RedisServer) -> None:
    backend = RedisBackend.from_url(redis_server.url)
    cache = ResponseCache(backend)
    big = COMPLETION.replace(b'"content":"4"', b'"content":"' + b"lorem ipsum " * 500 + b'"')
    try:
        plan = plan_for(cache, route())
        await cache.store_json(plan, big)
        raw = await backend.client.get(RedisBackend.redis_key(plan.key))
        assert isinstance(raw, bytes) and raw[:1] == b"Z" and len(raw) < len(big) // 4
        hit = await cache.lookup(plan)
        assert hit is not None and hit.entry.body == big
    finally:
        await cache.aclose()


# --- eviction ----------------------------------------------------------------------------

async def test_memory_lru_is_bounded_by_entries() -> None:
    backend = MemoryBackend(max_entries=3)
    for i in range(3):
        await backend.set(f"k{i}", b"v", 60)
    assert await backend.get("k0") == b"v"  # k0 is now the most recently used
    await backend.set("k3", b"v", 60)
    assert len(backend) == 3
    assert await backend.get("k1") is None
    assert [await backend.get(k) for k in ("k0", "k2", "k3")] == [b"v"] * 3


async def test_memory_lru_is_bounded_by_bytes() -> None:
    backend = MemoryBackend(max_bytes=1000)
    for i in range(10):
        await backend.set(f"k{i}", bytes(300), 60)
    assert backend.bytes <= 1000 and len(backend) == 3
    assert await backend.get("k9") is not None and await backend.get("k0") is None
    await backend.set("huge", bytes(1001), 60)
    assert await backend.get("huge") is None and backend.bytes <= 1000


async def test_entries_over_the_size_limit_are_not_stored() -> None:
    cache = ResponseCache(MemoryBackend(), max_entry_bytes=200)
    assert not await cache.store_json(plan_for(cache, route()), COMPLETION)
    assert await cache.lookup(plan_for(cache, route())) is None


# --- Redis down --------------------------------------------------------------------------

async def test_redis_down_is_a_counted_miss_and_recovers(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    now = [0.0]
    backend = RedisBackend.from_url(server.url, retry_interval=5.0, monotonic=lambda: now[0])
    cache = ResponseCache(backend)
    try:
        plan = plan_for(cache, route())
        await cache.store_json(plan, COMPLETION)
        assert await cache.lookup(plan) is not None
        server.stop()
        assert await cache.lookup(plan) is None
        assert await cache.store_json(plan, COMPLETION)  # no exception reaches the caller
        assert await cache.lookup(plan) is None  # within retry_interval: Redis not even tried
        assert backend.errors >= 2
        server.start()
        now[0] += 5.0
        await cache.store_json(plan, COMPLETION)
        assert await cache.lookup(plan) is not None
    finally:
        await cache.aclose()
        server.stop()


async def test_unreachable_redis_from_the_start_is_a_miss() -> None:
    cache = ResponseCache(RedisBackend.from_url(f"redis://127.0.0.1:{free_port()}/0"))
    try:
        plan = plan_for(cache, route())
        await cache.store_json(plan, COMPLETION)
        assert await cache.lookup(plan) is None
        assert cache.stats.misses == 1
    finally:
        await cache.aclose()


# --- streams -----------------------------------------------------------------------------

def upstream_events(with_usage_chunk: bool = True) -> list[Event]:
    base = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1700000000,
            "model": "gpt-x", "system_fingerprint": "fp_1"}
    deltas = [({"role": "assistant", "content": ""}, None), ({"content": "Two"}, None),
              ({"content": " plus two is four."}, None), ({}, "stop")]
    events = [Event(orjson.dumps({**base, "choices": [
        {"index": 0, "delta": d, "logprobs": None, "finish_reason": f}]}).decode())
        for d, f in deltas]
    if with_usage_chunk:
        events.append(Event(orjson.dumps({**base, "choices": [], "usage": {
            "prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18}}).decode()))
    events.append(Event("[DONE]"))
    return events


def decode(events: list[Event], *, include_usage: bool) -> list[StreamItem]:
    """What the handler sees: the real OpenAI decoder's items (upstream always sends usage)."""
    decoder = OpenAIStreamDecoder(Provider(name="p", kind="openai"),
                                  Target(provider="p", model="gpt-x"),
                                  include_usage=include_usage)
    return [decoder.feed(e) for e in events]


def sent_bytes(items: list[StreamItem]) -> bytes:
    return b"".join(item.downstream for item in items)


async def record(cache: ResponseCache, items: list[StreamItem], body: dict[str, Any]) -> bool:
    recorder = cache.recorder(plan_for(cache, route(), body))
    assert recorder is not None
    for item in items:
        recorder.feed(item)
    return await recorder.finish()


STREAM_BODY = {**BODY, "stream": True}


@pytest.mark.parametrize("include_usage", [False, True])
async def test_a_recorded_stream_replays_identically(cache: ResponseCache,
                                                     include_usage: bool) -> None:
    items = decode(upstream_events(), include_usage=include_usage)
    assert await record(cache, items, STREAM_BODY)
    hit = await cache.lookup(plan_for(cache, route(), STREAM_BODY), stream=True)
    assert hit is not None
    assert b"".join(hit.sse(include_usage=include_usage)) == sent_bytes(items)
    assert hit.usage == Usage(12, 6, 0, known=True)


async def test_replay_adds_or_drops_the_usage_chunk_for_the_asking_client(
        cache: ResponseCache) -> None:
    without = decode(upstream_events(), include_usage=False)
    assert await record(cache, without, STREAM_BODY)
    hit = await cache.lookup(plan_for(cache, route(), STREAM_BODY), stream=True)
    assert hit is not None
    events = b"".join(hit.sse(include_usage=True)).split(b"\n\n")
    usage_chunk = orjson.loads(events[-3].removeprefix(b"data: "))
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["total_tokens"] == 18
    assert usage_chunk["id"] == "chatcmpl-9" and events[-2] == b"data: [DONE]"

    with_usage = decode(upstream_events(), include_usage=True)
    await record(cache, with_usage, {**STREAM_BODY, "temperature": 0.9})
    hit = await cache.lookup(plan_for(cache, route(), {**STREAM_BODY, "temperature": 0.9}),
                             stream=True)
    assert hit is not None
    assert b"".join(hit.sse(include_usage=False)) == sent_bytes(without)


async def test_streams_split_across_items_at_odd_boundaries_are_recorded(
        cache: ResponseCache) -> None:
    whole = sent_bytes(decode(upstream_events(), include_usage=False))
    pieces = [StreamItem(whole[i:i + 7]) for i in range(0, len(whole), 7)]
    assert await record(cache, pieces, STREAM_BODY)
    hit = await cache.lookup(plan_for(cache, route(), STREAM_BODY), stream=True)
    assert hit is not None and b"".join(hit.sse(include_usage=False)) == whole


async def test_incomplete_or_failed_streams_are_not_stored(cache: ResponseCache) -> None:
    items = decode(upstream_events(), include_usage=False)
    cut = [i for i in items if i.downstream != b"data: [DONE]\n\n"]
    assert not await record(cache, cut, STREAM_BODY)  # no [DONE]: broken mid-stream
    unfinished = [i for i in items if b'"finish_reason":"stop"' not in i.downstream]
    assert not await record(cache, unfinished, STREAM_BODY)
    errored = [*items[:2], StreamItem(b'data: {"error":{"message":"boom"}}\n\n'), items[-1]]
    assert not await record(cache, errored, STREAM_BODY)
    assert await cache.lookup(plan_for(cache, route(), STREAM_BODY), stream=True) is None


def test_entries_from_something_else_are_a_miss() -> None:
    assert Entry.decode(b"garbage") is None
    assert Entry.decode(b"J{}") is None
    assert Entry.decode(b"Zxx") is None
    entry = Entry("stream", chunks=('{"a":1}',), usage={"prompt_tokens": 1})
    assert Entry.decode(entry.encode()) == entry
    assert Hit(entry).entry.chunks == ('{"a":1}',)
