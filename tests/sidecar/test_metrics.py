"""Every sidecar metric read from a real scrape of the ops port after real requests.

Success, stream, fallback, every-target-failed, rate limit, budget, auth and unknown-model
paths each move the series an operator alerts on; Redis latency and outage counters come
from a real redis-server; 1,000 random keys and model names add no series.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from llmgate_sidecar.observability.metrics import REJECTION_REASONS, rejection_reason
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.openai_upstream import Behaviour, FakeOpenAI
from tests.sidecar.harness import KEY, Gateway, provider, route, start_gateway, virtual_key
from tests.sidecar.redis_server import RedisServer, free_port

LIMITED_KEY = "lg-limited-key-0123456789"
CAPPED_KEY = "lg-capped-key-0123456789"
PRICING = {"up-1": {"inputPerMillion": "1000", "outputPerMillion": "2000"},
           "up-2": {"inputPerMillion": "1000", "outputPerMillion": "2000"}}
# The fake upstream answers "Say hello" (2 tokens) with 5 tokens: 2 * $0.001 + 5 * $0.002.
COST = 0.012
MESSAGES = [{"role": "user", "content": "Say hello"}]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def resources(first: str, second: str) -> list[dict[str, Any]]:
    return [
        provider("primary", baseURL=first, pricing=PRICING),
        provider("backup", baseURL=second, pricing=PRICING),
        route("chat", [{"provider": "primary", "model": "up-1"},
                       {"provider": "backup", "model": "up-2"}], aliases=["chat-alias"]),
        route("other", [{"provider": "backup", "model": "up-2"}]),
        virtual_key("team", secretName="team-key", models=["chat", "chat-alias"],
                    budget={"limit": "100.00", "period": "1d"}),
        virtual_key("limited", secretName="limited-key", limits={"requestsPerMinute": 2}),
        virtual_key("capped", secretName="capped-key",
                    budget={"limit": "0.05", "period": "1d"}),
    ]


SECRETS = {"limited-key": {"api-key": LIMITED_KEY}, "capped-key": {"api-key": CAPPED_KEY}}


@pytest.fixture
async def upstreams() -> AsyncIterator[tuple[FakeOpenAI, FakeOpenAI]]:
    first, second = await FakeOpenAI().start(), await FakeOpenAI().start()
    yield first, second
    await first.close()
    await second.close()


@pytest.fixture
async def gateway(tmp_path: Path, upstreams: tuple[FakeOpenAI, FakeOpenAI]
                  ) -> AsyncIterator[Gateway]:
    gw = await start_gateway(tmp_path, resources(upstreams[0].url, upstreams[1].url), SECRETS)
    yield gw
    await gw.close()


def client(gw: Gateway, key: str = KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=10)


async def scrape(gw: Gateway) -> Samples:
    async with aiohttp.ClientSession() as session, session.get(gw.ops_url + "/metrics") as r:
        assert r.status == 200
        text = await r.text()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def settled(gw: Gateway, name: str, **labels: str) -> Samples:
    """Scrape until the background settlement has published `name` (bounded polling)."""
    for _ in range(500):
        samples = await scrape(gw)
        if (name, frozenset(labels.items())) in samples:
            return samples
        await asyncio.sleep(0.01)
    raise AssertionError(f"{name}{labels} never appeared")


async def test_success_and_stream_fill_traffic_token_cost_and_budget_series(
        gateway: Gateway) -> None:
    async with client(gateway) as c:
        await c.chat.completions.create(model="chat", messages=MESSAGES)
        stream = await c.chat.completions.create(model="chat-alias", messages=MESSAGES,
                                                 stream=True)
        async for _ in stream:
            pass
    # Both answers are priced from usage and booked; the budget shows what is left of $100
    # (read back at most twice a second, so the second settlement shows a moment later).
    for _ in range(200):
        s = await settled(gateway, "llmgate_budget_remaining_usd", virtual_key="team")
        if value(s, "llmgate_budget_remaining_usd", virtual_key="team") == pytest.approx(
                100 - 2 * COST):
            break
        await asyncio.sleep(0.01)
    assert value(s, "llmgate_budget_remaining_usd", virtual_key="team") == pytest.approx(
        100 - 2 * COST)
    served = {"route": "chat", "provider": "primary", "model": "up-1", "virtual_key": "team"}
    assert value(s, "llmgate_requests_total", **served, status_class="2xx") == 2
    assert value(s, "llmgate_tokens_total", **served, direction="input") == 4
    assert value(s, "llmgate_tokens_total", **served, direction="output") == 10
    assert value(s, "llmgate_cost_usd_total", **served) == pytest.approx(2 * COST)
    for stream_label in ("true", "false"):
        assert value(s, "llmgate_request_duration_seconds_count", route="chat",
                     stream=stream_label) == 1
        assert value(s, "llmgate_gateway_overhead_seconds_count", stream=stream_label) == 1
    assert value(s, "llmgate_time_to_first_token_seconds_count", route="chat",
                 provider="primary") == 1
    assert value(s, "llmgate_upstream_attempts_total", provider="primary", model="up-1",
                 outcome="success") == 2
    assert value(s, "llmgate_in_flight_requests") == 0
    assert value(s, "llmgate_store_duration_seconds_count", operation="admit",
                 store="memory") == 2
    assert value(s, "llmgate_store_duration_seconds_count", operation="settle",
                 store="memory") == 2
    assert value(s, "llmgate_config_reloads_total", result="success") == 1
    assert not any(name == "llmgate_redis_errors_total" for name, _ in s)  # no Redis here


async def test_fallback_and_total_failure_are_counted_by_reason(
        gateway: Gateway, upstreams: tuple[FakeOpenAI, FakeOpenAI]) -> None:
    first, second = upstreams
    first.script.append(Behaviour(kind="status", status=500))
    async with client(gateway) as c:
        await c.chat.completions.create(model="chat", messages=MESSAGES)
        first.script.append(Behaviour(kind="status", status=503))
        second.script.append(Behaviour(kind="status", status=500))
        with pytest.raises(openai.APIStatusError):
            await c.chat.completions.create(model="chat", messages=MESSAGES)
    s = await scrape(gateway)
    assert value(s, "llmgate_fallbacks_total", route="chat", reason="serverError") == 2
    assert value(s, "llmgate_upstream_errors_total", provider="primary",
                 error_class="serverError") == 2
    assert value(s, "llmgate_upstream_errors_total", provider="backup",
                 error_class="serverError") == 1
    assert value(s, "llmgate_requests_total", route="chat", provider="backup", model="up-2",
                 virtual_key="team", status_class="2xx") == 1
    assert value(s, "llmgate_requests_total", route="chat", provider="none", model="none",
                 virtual_key="team", status_class="5xx") == 1
    assert value(s, "llmgate_rejections_total", reason="upstream") == 1
    # The failed request spent nothing; the fallback's answer was priced at the backup.
    assert value(s, "llmgate_cost_usd_total", route="chat", provider="backup", model="up-2",
                 virtual_key="team") == pytest.approx(COST)


async def test_limits_budgets_auth_and_unknown_models_are_rejections_by_kind(
        gateway: Gateway) -> None:
    async with client(gateway, LIMITED_KEY) as c:
        for _ in range(2):
            await c.chat.completions.create(model="other", messages=MESSAGES)
        with pytest.raises(openai.RateLimitError):
            await c.chat.completions.create(model="other", messages=MESSAGES)
    async with client(gateway, CAPPED_KEY) as c:
        with pytest.raises(openai.RateLimitError):  # worst case $0.2 > the $0.05 budget
            await c.chat.completions.create(model="other", messages=MESSAGES, max_tokens=100)
    async with client(gateway, "lg-not-a-key-0000000000") as c:
        with pytest.raises(openai.AuthenticationError):
            await c.chat.completions.create(model="other", messages=MESSAGES)
    async with client(gateway) as c:
        with pytest.raises(openai.NotFoundError):
            await c.chat.completions.create(model="gpt-nonexistent", messages=MESSAGES)
        with pytest.raises(openai.PermissionDeniedError):
            await c.chat.completions.create(model="other", messages=MESSAGES)
    s = await scrape(gateway)
    for reason in ("rate_limit_requests", "budget", "auth", "not_found", "forbidden"):
        assert value(s, "llmgate_rejections_total", reason=reason) == 1, reason
    refused = {"provider": "none", "model": "none", "status_class": "4xx"}
    assert value(s, "llmgate_requests_total", route="other", virtual_key="limited",
                 **refused) == 1
    assert value(s, "llmgate_requests_total", route="other", virtual_key="capped",
                 **refused) == 1
    assert value(s, "llmgate_requests_total", route="unknown", virtual_key="unknown",
                 **refused) == 1
    assert value(s, "llmgate_requests_total", route="unknown", virtual_key="team",
                 **refused) == 1


async def test_random_keys_and_models_never_grow_the_series(gateway: Gateway) -> None:
    async with aiohttp.ClientSession() as session:
        async def ask(key: str, model: str) -> int:
            async with session.post(gateway.base_url + "/chat/completions", json={
                    "model": model, "messages": MESSAGES},
                    headers={"Authorization": f"Bearer {key}"}) as r:
                return r.status

        assert await ask("lg-zzwarm", "zzwarm") == 401
        assert await ask(KEY, "zzwarm") == 404
        before = await scrape(gateway)
        statuses = [await ask(f"lg-zz{secrets.token_hex(8)}" if i % 2 else KEY,
                              f"zz{secrets.token_hex(8)}") for i in range(1000)]
    assert set(statuses) == {401, 404}
    after = await scrape(gateway)
    assert set(after) == set(before)
    assert not [labels for _, labels in after if any(v.startswith(("zz", "lg-"))
                                                     for _, v in labels)]
    assert value(after, "llmgate_rejections_total", reason="auth") == 501
    assert value(after, "llmgate_rejections_total", reason="not_found") == 501


async def test_redis_store_latency_and_outage_are_exported(
        tmp_path: Path, upstreams: tuple[FakeOpenAI, FakeOpenAI],
        redis_server: RedisServer) -> None:
    shared = await start_gateway(tmp_path / "up", resources(*[u.url for u in upstreams]),
                                 SECRETS, redis_url=redis_server.url)
    # Nothing listens on this port: every Redis call fails at once, failOpen serves locally.
    down = await start_gateway(tmp_path / "down", resources(*[u.url for u in upstreams]),
                               SECRETS, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    try:
        for gw in (shared, down):
            async with client(gw, LIMITED_KEY) as c:
                await c.chat.completions.create(model="other", messages=MESSAGES)
        ok = await settled(shared, "llmgate_store_duration_seconds_count",
                           operation="settle", store="redis")
        assert value(ok, "llmgate_store_duration_seconds_count", operation="admit",
                     store="redis") == 1
        assert value(ok, "llmgate_redis_errors_total") == 0
        assert value(ok, "llmgate_redis_degraded") == 0
        bad = await settled(down, "llmgate_store_duration_seconds_count",
                            operation="settle", store="redis")
        assert value(bad, "llmgate_redis_errors_total") >= 1
        assert value(bad, "llmgate_redis_local_admits_total") == 1
        assert value(bad, "llmgate_redis_degraded") == 1
        assert value(bad, "llmgate_requests_total", route="other", provider="backup",
                     model="up-2", virtual_key="limited", status_class="2xx") == 1
    finally:
        await shared.close()
        await down.close()


@pytest.mark.parametrize("raw, reason", [
    ("rate_limit_exceeded:requests", "rate_limit_requests"),
    ("rate_limit_exceeded:tokens", "rate_limit_tokens"),
    ("rate_limit_exceeded:parallel", "parallel"),
    ("budget_exceeded:budget", "budget"), ("rate_limit_exceeded:budget", "budget"),
    ("missing_api_key", "auth"), ("key_expired", "auth"), ("model_not_allowed", "forbidden"),
    ("guardrail_blocked", "guardrail"), ("model_not_found", "not_found"),
    ("invalid_json", "bad_request"), ("too_large", "too_large"),
    ("config_not_loaded", "unavailable"), ("upstream_timeout", "upstream"),
    ("internal", "internal"), ("whatever-a-client-sent", "other"), ("x:y", "other"),
])
def test_rejection_reasons_are_a_fixed_set(raw: str, reason: str) -> None:
    assert rejection_reason(raw) == reason
    assert reason in REJECTION_REASONS
