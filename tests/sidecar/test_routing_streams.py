"""Streams after the first byte: in-band errors, client disconnects, reloads under load.

Real app on loopback (the shared harness), real fake upstreams; the client side is raw
aiohttp where the exact bytes matter and the OpenAI SDK where what an app sees matters.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from llmgate_sidecar.api.state import CONFIG, ROUTER

from tests.fakes.openai_upstream import Behaviour, FakeOpenAI
from tests.sidecar.harness import KEY, Gateway, provider, route, start_gateway, virtual_key

MESSAGES = [{"role": "user", "content": "Say hello"}]
HANG_GUARD = 10.0  # seconds; only ever reached if the behaviour under test is broken


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    fake = await FakeOpenAI().start()
    yield fake
    await fake.close()


@pytest.fixture
async def other() -> AsyncIterator[FakeOpenAI]:
    fake = await FakeOpenAI().start()
    fake.default = Behaviour(content="answer from the new config")
    yield fake
    await fake.close()


def resources(url: str, timeout: str | None = "500ms") -> list[dict[str, Any]]:
    target = {"provider": "up", "model": "m-1", **({"timeout": timeout} if timeout else {})}
    return [provider("up", baseURL=url), route("chat", [target]),
            virtual_key("team", secretName="team-key")]


@pytest.fixture
async def gateway(tmp_path: Path, upstream: FakeOpenAI) -> AsyncIterator[Gateway]:
    gw = await start_gateway(tmp_path, resources(upstream.url))
    yield gw
    await gw.close()


async def sse_events(gw: Gateway, session: aiohttp.ClientSession) -> list[str]:
    async with session.post(gw.base_url + "/chat/completions",
                            json={"model": "chat", "messages": MESSAGES, "stream": True},
                            headers={"Authorization": f"Bearer {KEY}"}) as response:
        assert response.status == 200
        text = await response.text()
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


@pytest.mark.parametrize(("failure", "code"), [
    (Behaviour(kind="stall", chunks_before=2), "timeout"),
    (Behaviour(kind="cut", chunks_before=2), "connectionError"),
    (Behaviour(kind="error_event", chunks_before=2), "serverError"),
])
async def test_failure_after_the_first_byte_ends_with_an_error_event_and_no_done(
        gateway: Gateway, upstream: FakeOpenAI, failure: Behaviour, code: str) -> None:
    upstream.script.append(failure)
    async with aiohttp.ClientSession() as session:
        events = await asyncio.wait_for(sse_events(gateway, session), HANG_GUARD)
    assert len(events) == 3  # two content chunks, then the error
    assert '"content":"Hello "' in events[0]
    assert f'"code":"{code}"' in events[-1] and "upstream failed mid-stream" in events[-1]
    assert "[DONE]" not in events
    counted = gateway.metrics.stream_errors.labels("chat", code)._value.get()
    assert counted == 1


async def test_the_openai_sdk_raises_on_a_mid_stream_stall(gateway: Gateway,
                                                           upstream: FakeOpenAI) -> None:
    upstream.script.append(Behaviour(kind="stall", chunks_before=1))
    async with openai.AsyncOpenAI(base_url=gateway.base_url, api_key=KEY, max_retries=0,
                                  timeout=HANG_GUARD) as c:
        stream = await c.chat.completions.create(model="chat", messages=MESSAGES, stream=True)
        received = []
        with pytest.raises(openai.APIError, match="upstream failed mid-stream") as info:
            async for chunk in stream:
                received.append(chunk)
    assert info.value.code == "timeout"
    assert [ch.choices[0].delta.content for ch in received] == ["Hello "]


async def test_client_disconnect_mid_stream_closes_the_upstream_call(
        tmp_path: Path, upstream: FakeOpenAI) -> None:
    # The upstream sends two chunks, then would stay silent for a minute; no timeout is
    # configured, so only noticing the client's departure can end this upstream call.
    upstream.script.append(Behaviour(kind="stall", chunks_before=2, stall=60))
    gateway = await start_gateway(tmp_path, resources(upstream.url, timeout=None))
    try:
        await _disconnect_and_check(gateway, upstream)
    finally:
        await gateway.close()


async def _disconnect_and_check(gateway: Gateway, upstream: FakeOpenAI) -> None:
    router = gateway.app[ROUTER]
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            gateway.base_url + "/chat/completions",
            json={"model": "chat", "messages": MESSAGES, "stream": True},
            headers={"Authorization": f"Bearer {KEY}"})
        first = await response.content.readuntil(b"\n\n")
        assert b"Hello" in first
        assert router.stats.in_flight[("up", "m-1")] == 1
        response.close()  # the app gives up: its connection to the gateway closes
    # The gateway notices while the upstream is silent, and closes its upstream connection.
    await asyncio.wait_for(upstream.disconnected.wait(), HANG_GUARD)
    assert upstream.disconnects == 1
    for _ in range(100):
        if gateway.metrics.in_flight._value.get() == 0:
            break
        await asyncio.sleep(0.05)
    assert gateway.metrics.stream_errors.labels("chat", "clientDisconnected")._value.get() == 1
    assert router.stats.in_flight[("up", "m-1")] == 0
    requests = gateway.metrics.requests.labels("chat", "up", "m-1", "team", "499")
    assert requests._value.get() == 1


async def test_reload_during_100_streams_loses_none_of_them(
        tmp_path: Path, upstream: FakeOpenAI, other: FakeOpenAI) -> None:
    gate = asyncio.Event()
    upstream.default = Behaviour(content="the old config answers in full", chunks_before=1,
                                 gate=gate)
    gw = await start_gateway(tmp_path, resources(upstream.url, timeout=None))
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            streams = [asyncio.create_task(sse_events(gw, session)) for _ in range(100)]
            for _ in range(400):
                if upstream.streams_open == 100:
                    break
                await asyncio.sleep(0.025)
            assert upstream.streams_open == 100
            # Point the route at another upstream while all 100 are mid-stream.
            generation = gw.apply(resources(other.url, timeout=None),
                                  {"team-key": {"api-key": KEY}})
            fresh = await asyncio.wait_for(sse_events(gw, session), HANG_GUARD)
            gate.set()
            results = await asyncio.wait_for(asyncio.gather(*streams), HANG_GUARD * 3)
        assert "answer from the new config" in text_of(fresh)
        assert all(text_of(events) == "the old config answers in full" for events in results)
        assert all(events[-1] == "[DONE]" for events in results)
        current = gw.app[CONFIG].current
        assert current is not None and current.generation == generation
        assert len(other.requests) == 1
    finally:
        await gw.close()


def text_of(events: list[str]) -> str:
    parts = []
    for event in events:
        if event == "[DONE]":
            continue
        chunk = orjson.loads(event)
        for choice in chunk.get("choices") or []:
            parts.append(choice.get("delta", {}).get("content") or "")
    return "".join(parts)
