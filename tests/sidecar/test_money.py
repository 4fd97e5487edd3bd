"""Money is never lost (issue 12): each leak the issue lists, closed and tested on the real
gateway (`create_app` on loopback) in front of the fake OpenAI upstream.

Reservations are read back from the running app's config (`reservation` over the route the
request would take) or from the store while a request is held upstream; what the upstream
received is read from the fake's request log.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import zlib
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from llmgate_sidecar.api.state import CONFIG
from llmgate_sidecar.config.pricing import image_size, image_token_bound, input_token_bound
from llmgate_sidecar.policy.accounting import reservation
from llmgate_sidecar.policy.redis_store import RedisStore
from llmgate_sidecar.policy.store import Ticket

from tests.conftest import free_port
from tests.fakes.openai_upstream import Behaviour, FakeOpenAI
from tests.sidecar.harness import KEY, Gateway, provider, route, start_gateway, virtual_key
from tests.sidecar.redis_server import RedisServer

# $1 per million tokens in, $2 out: reservations are easy to read back in tokens.
PRICING = {"m": {"inputPerMillion": "1", "outputPerMillion": "2"}}
KEY_REF = {"secretKeyRef": {"name": "up-cred", "key": "api-key"}}


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    fake = await FakeOpenAI().start()
    yield fake
    await fake.close()


@pytest.fixture
async def gateway(tmp_path: Path, upstream: FakeOpenAI) -> AsyncIterator[Gateway]:
    gw = await start_gateway(tmp_path, [
        provider("up", "openai", baseURL=upstream.url, apiKey=KEY_REF, pricing=PRICING),
        route("capped", [{"provider": "up", "model": "m", "params": {"max_tokens": 10}}]),
        route("open", [{"provider": "up", "model": "m"}]),
        virtual_key("team", secretName="team-key", budget={"limit": "100.00", "period": "1d"}),
    ], {"up-cred": {"api-key": "sk-upstream-0123456789"}})
    yield gw
    await gw.close()


def reserved(gw: Gateway, model: str, body: dict[str, Any], *,
             ceilings: bool = True) -> tuple[int, Decimal]:
    runtime = gw.app[CONFIG].current
    assert runtime is not None
    rt = runtime.routes_by_model[model]
    planned = reservation(runtime, rt, rt.group, {"model": model, **body}, ceilings=ceilings)
    return planned.output_tokens, planned.usd


async def post(gw: Gateway, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.post(
            gw.url + path, json=body, headers={"Authorization": f"Bearer {KEY}"}) as response:
        return response.status, await response.json()


HELLO = [{"role": "user", "content": "hello"}]


async def test_n_multiplies_the_route_ceiling(gateway: Gateway) -> None:
    """Leak 3: route max_tokens 10 and n 50 can generate 500 tokens, not 10."""
    output, _ = reserved(gateway, "capped", {"messages": HELLO, "n": 50})
    assert output == 500
    output, _ = reserved(gateway, "capped", {"messages": HELLO, "n": 50, "max_tokens": 4})
    assert output == 200
    output, _ = reserved(gateway, "open", {"messages": HELLO, "n": 3, "max_tokens": 7})
    assert output == 21


async def test_max_completion_tokens_cannot_bypass_a_max_tokens_ceiling(
        gateway: Gateway, upstream: FakeOpenAI) -> None:
    """Leak 4: the ceiling bounds every output field the upstream receives, and the
    reservation takes the larger field a provider may honour."""
    status, _ = await post(gateway, "/v1/chat/completions", {
        "model": "capped", "messages": HELLO, "max_completion_tokens": 1000})
    assert status == 200
    sent = upstream.requests[-1]
    assert sent["max_completion_tokens"] == 10
    assert sent.get("max_tokens", 10) <= 10
    output, _ = reserved(gateway, "capped", {"messages": HELLO, "max_completion_tokens": 1000})
    assert output == 10
    # Without a ceiling, both fields sent: the larger one is what may be generated.
    output, _ = reserved(gateway, "open", {"messages": HELLO, "max_completion_tokens": 5,
                                           "max_tokens": 900})
    assert output == 900


async def test_pass_through_reserves_the_clients_own_limit(gateway: Gateway) -> None:
    """A pass-through body goes upstream as it came: the route's params cannot cap it."""
    output, _ = reserved(gateway, "capped", {"prompt": "hi", "max_tokens": 300},
                         ceilings=False)
    assert output == 300


@pytest.mark.parametrize(("path", "extra"), [
    ("/v1/chat/completions", {"messages": HELLO}),
    ("/v1/completions", {"prompt": "hi"}),
    ("/v1/responses", {"input": "hi"}),
])
@pytest.mark.parametrize(("field", "value", "code"), [
    ("n", 20.0, "invalid_type"),
    ("n", "3", "invalid_type"),
    ("n", 0, "integer_below_min_value"),
    ("n", 129, "integer_above_max_value"),
    ("max_tokens", 10.5, "invalid_type"),
    ("max_tokens", 2**64 - 1, "integer_above_max_value"),
    ("max_output_tokens", 1e9, "invalid_type"),
    ("best_of", 2.0, "invalid_type"),
])
async def test_counts_that_are_not_integers_in_range_are_refused_at_the_edge(
        gateway: Gateway, upstream: FakeOpenAI, path: str, extra: dict[str, Any], field: str,
        value: Any, code: str) -> None:
    """Leak 5: `n: 20.0` used to be forwarded and reserved as one choice."""
    status, body = await post(gateway, path, {"model": "open", **extra, field: value})
    assert status == 400
    assert body["error"]["param"] == field
    assert body["error"]["code"] == code
    assert upstream.requests == []


async def test_cjk_text_is_reserved_from_its_utf8_bytes(gateway: Gateway) -> None:
    """Leak 6: 6,000 CJK characters are 18,000 UTF-8 bytes, which bound any byte-level
    BPE count; characters / 4 reserved 1,500 tokens."""
    body = {"messages": [{"role": "user", "content": "漢" * 6000}], "max_tokens": 1}
    _, usd = reserved(gateway, "open", body)
    assert usd >= Decimal(18000) / 1_000_000
    assert input_token_bound(body) >= 18000


def png(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + header
            + struct.pack(">I", zlib.crc32(b"IHDR" + header)))


def test_images_count_by_the_providers_formulas_not_their_base64_size() -> None:
    """Leak 6, images: a 2048x768 image is 1,445 tokens at OpenAI (8 tiles) whatever its
    size in bytes; an unreadable one counts as the largest documented maximum."""
    assert image_size(png(2048, 768)) == (2048, 768)
    assert image_token_bound((2048, 768)) >= 1445
    assert image_token_bound((2048, 768), "gpt-4o-mini") == 2833 + 8 * 5667
    assert image_token_bound(None) >= 1600
    url = "data:image/png;base64," + base64.b64encode(png(2048, 768) + bytes(50)).decode()
    body = {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}]}]}
    tiny = input_token_bound(body)
    assert 1445 <= tiny < 5000
    padded = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": "data:image/png;base64," + base64.b64encode(
            png(2048, 768) + bytes(600_000)).decode()}}]}]}
    assert input_token_bound(padded) == tiny  # not its base64 size
    assert input_token_bound({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}) >= 3779


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.01)


@pytest.fixture
async def retrying(tmp_path: Path, upstream: FakeOpenAI) -> AsyncIterator[Gateway]:
    """A route whose target times out after 0.3 s and is tried twice; a $1 budget."""
    gw = await start_gateway(tmp_path, [
        provider("up", "openai", baseURL=upstream.url, apiKey=KEY_REF, pricing=PRICING),
        route("retry", [{"provider": "up", "model": "m", "timeout": "300ms"}],
              retry={"attempts": 2, "backoff": {"initial": "10ms", "max": "20ms"}}),
        virtual_key("team", secretName="team-key", budget={"limit": "1.00", "period": "1d"}),
    ], {"up-cred": {"api-key": "sk-upstream-0123456789"}})
    yield gw
    await gw.close()


BIG = {"model": "retry", "messages": HELLO, "max_tokens": 100_000}  # reserves $0.2+


async def test_a_timed_out_try_is_booked_and_its_retry_holds_another_reservation(
        retrying: Gateway, upstream: FakeOpenAI) -> None:
    """Leak 1: a try that timed out after it was sent is billed upstream. It is booked at
    the reservation, and the retry first holds a reservation of its own."""
    upstream.script.append(Behaviour(delay=1.0))  # the first try: past the target timeout
    _, planned = reserved(retrying, "retry", BIG)
    status, body = await post(retrying, "/v1/chat/completions", BIG)
    assert status == 200
    answered = (Decimal(body["usage"]["prompt_tokens"]) * 1
                + Decimal(body["usage"]["completion_tokens"]) * 2) / 1_000_000
    spent, _ = await retrying.settled()
    assert spent == planned + answered
    assert len(upstream.requests) == 2


async def test_a_retry_the_budget_cannot_cover_is_refused_and_the_try_booked(
        retrying: Gateway, upstream: FakeOpenAI) -> None:
    _, planned = reserved(retrying, "retry", BIG)
    huge = {**BIG, "max_tokens": int(Decimal("0.6") / planned * 100_000)}  # > half the budget
    _, planned = reserved(retrying, "retry", huge)
    assert Decimal("0.5") < planned <= 1
    upstream.script.append(Behaviour(delay=1.0))
    status, body = await post(retrying, "/v1/chat/completions", huge)
    assert status == 429, body  # the budget is held by this request's own first try
    assert len(upstream.requests) == 1  # no second try without a reservation for it
    assert (await retrying.settled())[0] == planned


async def test_an_upstream_that_cannot_be_reached_books_nothing(tmp_path: Path) -> None:
    """Connecting failed: the request never left, nothing can have been billed."""
    gw = await start_gateway(tmp_path, [
        provider("up", "openai", baseURL=f"http://127.0.0.1:{free_port()}/v1", apiKey=KEY_REF,
                 pricing=PRICING),
        route("retry", [{"provider": "up", "model": "m"}], retry={"attempts": 1}),
        virtual_key("team", secretName="team-key", budget={"limit": "1.00", "period": "1d"}),
    ], {"up-cred": {"api-key": "sk-upstream-0123456789"}})
    try:
        status, _ = await post(gw, "/v1/chat/completions", BIG)
        assert status in (502, 503)
        assert (await gw.settled())[0] == 0
    finally:
        await gw.close()


async def test_cache_entries_live_apart_from_budgets(tmp_path: Path, upstream: FakeOpenAI,
                                                     redis_server: RedisServer) -> None:
    """Leak 7: with `cache_redis_url` the cache writes only there, so the instance holding
    budgets (noeviction) never fills with cache entries (nor evicts a budget for them)."""
    base = redis_server.url.removesuffix("/0")
    policy_db, cache_db = aioredis.from_url(base + "/5"), aioredis.from_url(base + "/6")
    await policy_db.flushdb()
    await cache_db.flushdb()
    gw = await start_gateway(tmp_path, [
        provider("up", "openai", baseURL=upstream.url, apiKey=KEY_REF, pricing=PRICING),
        route("cached", [{"provider": "up", "model": "m"}],
              cache={"mode": "exact", "ttl": "5m"}),
        virtual_key("team", secretName="team-key", budget={"limit": "1.00", "period": "1d"}),
    ], {"up-cred": {"api-key": "sk-upstream-0123456789"}}, redis_url=base + "/5",
        cache_redis_url=base + "/6")
    try:
        for _ in range(2):
            status, _ = await post(gw, "/v1/chat/completions",
                                   {"model": "cached", "messages": HELLO, "max_tokens": 5})
            assert status == 200
        assert len(upstream.requests) == 1  # the second answer came from the cache
        await gw.settled()
        policy_keys = [k.decode() for k in await policy_db.keys("*")]
        cache_keys = [k.decode() for k in await cache_db.keys("*")]
        assert policy_keys and all(k.startswith("llmgate:{default/team}:") for k in policy_keys)
        assert cache_keys and not any(k.startswith("llmgate:{default/") for k in cache_keys)
    finally:
        await gw.close()
        await policy_db.aclose()
        await cache_db.aclose()


class SlowSettlingStore(RedisStore):
    """The real RedisStore, with every settlement 0.3 s late, as over a slow link to Redis
    (the one thing a loopback Redis cannot show: a settlement still on its way)."""

    async def settle(self, ticket: Ticket, *, tokens: int, cost_micros: int) -> bool:
        await asyncio.sleep(0.3)
        return await super().settle(ticket, tokens=tokens, cost_micros=cost_micros)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
async def test_a_sequential_client_is_admitted_against_its_settled_cost_on_any_replica(
        tmp_path: Path, upstream: FakeOpenAI, redis_server: RedisServer, stream: bool) -> None:
    """Leak 9: one request at a time, alternating replicas, max_tokens 500 reserved, a
    tenth of that spent. Near its limit the key's cost is booked before the end of each
    answer is sent, so the next request (on the other replica) is not refused because the
    previous one still holds its reservation."""
    url = redis_server.url.removesuffix("/0") + "/7"
    client = aioredis.from_url(url)
    await client.flushdb()
    await client.aclose()
    body: dict[str, Any] = {"model": "open", "messages": HELLO, "max_tokens": 500,
                            "stream": stream}
    gateways = []
    try:
        for name in ("a", "b"):
            gateways.append(await start_gateway(tmp_path / name, [
                provider("up", "openai", baseURL=upstream.url, apiKey=KEY_REF,
                         pricing=PRICING),
                route("open", [{"provider": "up", "model": "m"}]),
                # Room for 1.5 reservations: a held one leaves none for the next request.
                virtual_key("team", secretName="team-key",
                            budget={"limit": "0.0016", "period": "1d"}),
            ], {"up-cred": {"api-key": "sk-upstream-0123456789"}},
                store=SlowSettlingStore.from_url(url)))
        _, planned = reserved(gateways[0], "open", body)
        assert Decimal("0.0016") / 2 < planned < Decimal("0.0016")
        statuses = []
        async with aiohttp.ClientSession() as session:
            for i in range(4):
                async with session.post(gateways[i % 2].url + "/v1/chat/completions",
                                        json=body,
                                        headers={"Authorization": f"Bearer {KEY}"}) as r:
                    await r.read()  # the whole answer, to its end
                    statuses.append(r.status)
        assert statuses == [200] * 4
    finally:
        for gw in gateways:
            await gw.close()
