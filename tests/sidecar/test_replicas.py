"""Limits and budgets through the real gateway: one process in memory, and two `llmgate dev`
processes acting as two replicas of a pod, sharing one real redis-server or a real 3-master
Redis Cluster (`redis+cluster://`).

The mock model is priced by a ProviderSecret override at $1 per output token, so every
request reserves max_tokens dollars and settles the few dollars it really used.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import openai
import pytest
import redis
import yaml

from tests.conftest import free_port
from tests.sidecar.harness import KEY, provider, route, start_gateway, virtual_key
from tests.sidecar.redis_server import RedisClusterSet, RedisServer

REPLICA_DB = 13  # the other Redis tests use database 0
REPLY = "one two three"  # 3 output tokens = $3 each
BUDGET = 100
RESERVE = 10  # max_tokens: 10 output tokens = $10 reserved per request


def crs(rpm: int | None = None) -> list[dict]:
    """A priced mock route and a key with the $100 budget, or (given `rpm`) only a rate limit."""
    return [
        provider("mock", "mock", mock={"reply": REPLY, "latencyMs": 30},
                 pricing={"mock-1": {"inputPerMillion": "0", "outputPerMillion": "1000000"}}),
        route("m", [{"provider": "mock", "model": "mock-1"}]),
        virtual_key("team", secretName="team-key",
                    **({"limits": {"requestsPerMinute": rpm}} if rpm else
                       {"budget": {"limit": f"{BUDGET}.00", "period": "1d"}})),
    ]


async def burst(base_urls: list[str], count: int) -> tuple[int, list[dict]]:
    """`count` concurrent requests spread over the replicas: (successes, 429 bodies)."""
    ok, refused = 0, []
    body = {"model": "m", "max_tokens": RESERVE, "messages": [{"role": "user", "content": "x"}]}
    async with aiohttp.ClientSession() as session:
        async def one(i: int) -> None:
            nonlocal ok
            async with session.post(base_urls[i % len(base_urls)] + "/chat/completions",
                                    json=body, headers={"Authorization": f"Bearer {KEY}"}) as r:
                payload = await r.json()
                if r.status == 200:
                    ok += 1
                else:
                    assert r.status == 429, payload
                    assert int(r.headers["Retry-After"]) >= 1
                    refused.append(payload["error"])
        await asyncio.gather(*(one(i) for i in range(count)))
    return ok, refused


async def until_refused(base_urls: list[str]) -> int:
    """Requests one at a time, alternating replicas, until the budget refuses one.

    A refusal because earlier requests still hold reservations (their settlement runs in the
    background) is retried: only an exhausted budget ends the count."""
    admitted, waits = 0, 0
    while admitted < BUDGET and waits < 100:
        _, refused = await burst([base_urls[admitted % len(base_urls)]], 1)
        if not refused:
            admitted += 1
        elif refused[0]["code"] == "budget_exceeded":
            return admitted
        else:
            assert "held by requests in flight" in refused[0]["message"], refused[0]
            waits += 1
            await asyncio.sleep(0.05)
    raise AssertionError("the budget never refused")


async def test_budget_holds_in_one_process(tmp_path: Path) -> None:
    gw = await start_gateway(tmp_path, crs())
    try:
        ok, refused = await burst([gw.base_url], 200)
        await asyncio.sleep(0.1)  # settlement tasks
        assert 1 <= ok and ok * 3 <= BUDGET
        assert refused and all("budget" in e["message"] for e in refused)
        # One at a time, the budget admits until spend + one reservation would exceed it.
        ok2 = await until_refused([gw.base_url])
        assert (ok + ok2) * 3 <= BUDGET
        assert BUDGET - (ok + ok2) * 3 < RESERVE
    finally:
        await gw.close()


async def test_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    gw = await start_gateway(tmp_path, crs(rpm=3))
    try:
        async with openai.AsyncOpenAI(base_url=gw.base_url, api_key=KEY, max_retries=0) as c:
            for left in (2, 1, 0):  # what the key has left, in OpenAI's header
                raw = await c.chat.completions.with_raw_response.create(
                    model="m", max_tokens=1, messages=[{"role": "user", "content": "x"}])
                assert raw.headers["x-ratelimit-remaining-requests"] == str(left)
                assert "x-llmgate-budget-remaining-usd" not in raw.headers  # no budget
            with pytest.raises(openai.RateLimitError) as info:
                await c.chat.completions.create(model="m", max_tokens=1, messages=[
                    {"role": "user", "content": "x"}])
        assert 1 <= int(info.value.response.headers["Retry-After"]) <= 60
        assert info.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    finally:
        await gw.close()


def _write_crs(path: Path, rpm: int | None) -> Path:
    docs = [*crs(rpm), {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "team-key"},
                        "stringData": {"api-key": KEY}}]
    path.write_text(yaml.safe_dump_all(docs))
    return path


def _wait_ready(ops_url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, "llmgate dev exited early"
        try:
            with urllib.request.urlopen(ops_url + "/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise AssertionError("replica did not become ready")


@pytest.fixture
def replicas(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """Two `llmgate dev` on one Redis; param: (topology, rpm or None for the budget CRs)."""
    topology, rpm = request.param
    if topology == "cluster":
        cluster: RedisClusterSet = request.getfixturevalue("redis_cluster")
        cluster.flush()
        url = cluster.url
    else:
        # A database of its own, emptied first: no other test's counters for this key.
        server: RedisServer = request.getfixturevalue("redis_server")
        url = f"{server.url.rsplit('/', 1)[0]}/{REPLICA_DB}"
        with redis.Redis.from_url(url) as client:
            client.flushdb()
    files = _write_crs(tmp_path / "crs.yaml", rpm)
    procs, urls = [], []
    try:
        for _ in range(2):
            port, ops = free_port(), free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "llmgate_cli", "dev", "-f", str(files), "--port",
                 str(port), "--ops-port", str(ops), "--redis-url", url,
                 "--log-level", "warning"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
            procs.append(proc)
            _wait_ready(f"http://127.0.0.1:{ops}", proc)
            urls.append(f"http://127.0.0.1:{port}/v1")
        yield urls
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                assert proc.wait(timeout=15) == 0
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


TOPOLOGIES = ["standalone", "cluster"]


@pytest.mark.parametrize("replicas", [(t, None) for t in TOPOLOGIES], indirect=True,
                         ids=TOPOLOGIES)
async def test_two_replicas_share_one_budget_through_redis(replicas: list[str]) -> None:
    ok, refused = await burst(replicas, 200)
    assert ok >= 1 and refused
    assert ok * 3 <= BUDGET, "the replicas together spent more than the budget"
    assert all("budget" in e["message"] for e in refused)
    await asyncio.sleep(0.2)
    ok2 = await until_refused(replicas)
    assert (ok + ok2) * 3 <= BUDGET
    assert BUDGET - (ok + ok2) * 3 < RESERVE  # and the budget was used, not lost


@pytest.mark.parametrize("replicas", [(t, 20) for t in TOPOLOGIES], indirect=True,
                         ids=TOPOLOGIES)
async def test_two_replicas_share_one_rate_limit_through_redis(replicas: list[str]) -> None:
    ok, refused = await burst(replicas, 80)
    # 20 requests per minute for the key across both replicas.
    assert ok == 20 and len(refused) == 60
    assert {e["code"] for e in refused} == {"rate_limit_exceeded"}
