"""Money is never leaked: every reservation is settled, also when the client walks away
mid-stream or the upstream fails, so the key's in-flight reservations return to zero."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import free_port
from tests.fakes.openai_upstream import Behaviour, FakeOpenAI
from tests.sidecar.harness import KEY, Gateway, provider, route, start_gateway, virtual_key

# $1 per output token, input free: a request with max_tokens=10 reserves exactly $10.
PRICING = {"up-1": {"inputPerMillion": "0", "outputPerMillion": "1000000"}}
BODY = {"model": "chat", "max_tokens": 10, "stream": True,
        "messages": [{"role": "user", "content": "x"}]}


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    fake = await FakeOpenAI().start()
    yield fake
    await fake.close()


@pytest.fixture
async def gateway(tmp_path: Path, upstream: FakeOpenAI) -> AsyncIterator[Gateway]:
    gw = await start_gateway(tmp_path, [
        provider("primary", baseURL=upstream.url, pricing=PRICING),
        route("chat", [{"provider": "primary", "model": "up-1"}]),
        virtual_key("team", secretName="team-key", budget={"limit": "1000.00", "period": "1d"}),
    ])
    yield gw
    await gw.close()


async def test_a_client_leaving_mid_stream_settles_its_reservation(
        gateway: Gateway, upstream: FakeOpenAI) -> None:
    upstream.script.append(Behaviour(chunk_delay=0.2, content="one two three four five six"))
    async with aiohttp.ClientSession() as session:
        response = await session.post(gateway.base_url + "/chat/completions", json=BODY,
                                      headers={"Authorization": f"Bearer {KEY}"})
        assert response.status == 200
        await response.content.readline()  # the first chunk arrived
        assert (await gateway.spend())[1] == Decimal(10)  # reserved while in flight
        response.close()  # the client goes away
    spent, reserved = await gateway.settled()
    # The usage never arrived, so the whole reservation is booked: never less than spent.
    assert reserved == 0 and spent == Decimal(10)
    for _ in range(100):
        if upstream.disconnects:
            break
        await asyncio.sleep(0.02)
    assert upstream.disconnects == 1  # and the upstream call was closed, not left running


async def test_a_completed_stream_settles_its_real_cost(gateway: Gateway) -> None:
    async def one() -> str:
        async with aiohttp.ClientSession() as session, session.post(
                gateway.base_url + "/chat/completions", json=BODY,
                headers={"Authorization": f"Bearer {KEY}"}) as response:
            assert b"[DONE]" in await response.read()
            return response.headers["x-llmgate-budget-remaining-usd"]

    # Left after admission: the $1000 budget minus this request's $10 worst case...
    assert await one() == "990.000000"
    # "Hello from the fake upstream" is 5 output tokens: $5 of the $10 reserved.
    assert await gateway.settled() == (Decimal(5), Decimal(0))
    # ...and for the next one, minus what the first really cost.
    assert await one() == "985.000000"


async def test_a_failed_request_books_nothing(gateway: Gateway, upstream: FakeOpenAI) -> None:
    upstream.script.append(Behaviour(kind="status", status=500))
    async with aiohttp.ClientSession() as session, session.post(
            gateway.base_url + "/chat/completions", json={**BODY, "stream": False},
            headers={"Authorization": f"Bearer {KEY}"}) as response:
        assert response.status == 502
    assert await gateway.settled() == (Decimal(0), Decimal(0))


@pytest.mark.parametrize(("fail_mode", "status"), [("failOpen", 200), ("failClosed", 503)])
async def test_redis_down_serves_with_local_limits_or_refuses_by_fail_mode(
        tmp_path: Path, upstream: FakeOpenAI, fail_mode: str, status: int) -> None:
    gw = await start_gateway(tmp_path, [
        provider("primary", baseURL=upstream.url, pricing=PRICING),
        route("chat", [{"provider": "primary", "model": "up-1"}]),
        virtual_key("team", secretName="team-key", budget={"limit": "1000.00", "period": "1d"}),
    ], redis_url=f"redis://127.0.0.1:{free_port()}/0", fail_mode=fail_mode)
    try:
        async with aiohttp.ClientSession() as session, session.post(
                gw.base_url + "/chat/completions", json={**BODY, "stream": False},
                headers={"Authorization": f"Bearer {KEY}"}) as response:
            payload = await response.json()
        assert response.status == status, payload
        if status == 503:
            assert int(response.headers["Retry-After"]) >= 1
            assert payload["error"]["type"] == "server_error"
    finally:
        await gw.close()


async def test_a_client_leaving_before_the_first_byte_cancels_the_upstream_call(
        gateway: Gateway, upstream: FakeOpenAI) -> None:
    # The upstream answers headers at once but its first chunk only after a second.
    upstream.script.append(Behaviour(kind="stall", chunks_before=0, stall=1.0))
    async with aiohttp.ClientSession() as session:
        request = asyncio.ensure_future(session.post(
            gateway.base_url + "/chat/completions", json=BODY,
            headers={"Authorization": f"Bearer {KEY}"}))
        await asyncio.sleep(0.3)  # still waiting for the first byte
        request.cancel()  # the client gives up and closes its connection
        with pytest.raises(asyncio.CancelledError):
            await request
    await asyncio.wait_for(upstream.disconnected.wait(), 5)
    # The gateway hung up before the upstream's first chunk: nothing was delivered to it.
    assert upstream.chunks_sent == 0 and upstream.disconnects == 1
    assert await gateway.settled() == (Decimal(10), Decimal(0))
