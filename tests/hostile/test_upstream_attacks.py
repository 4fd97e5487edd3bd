"""Hostile upstreams against the real sidecar process: every attack ends in a bounded time
with the right status (502/504 in the OpenAI envelope, or an in-band error once a stream is
committed), `/healthz` keeps answering, and the sidecar's peak RSS during the attack stays
within `ATTACK_RSS` of what it was before (docs/limits.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.fakes.hostile_upstream import HostileUpstream
from tests.hostile.sidecar_process import AUTH, MIB, SidecarProcess, chat_body
from tests.sidecar.harness import provider, route, virtual_key

# The documented bound (docs/limits.md) on what one hostile answer may add to the sidecar's
# RSS with the default caps (8 MiB answer, 64 KiB error body, 1 MiB stream event) and the
# allocator's slack: about 11 MiB measured at worst, against 160 MiB the issue allows.
ATTACK_RSS = 32 * MIB
# Small deadlines so the silent attacks end within the test (defaults: 300/120/900 s).
FLAGS = {"upstream_first_byte_timeout": 2, "upstream_idle_timeout": 2, "request_timeout": 4}
NON_STREAMED = ["gzip-bomb", "huge-json", "huge-error", "negative-usage", "no-headers"]
STREAMED = ["endless-line", "endless-event", "silent-stream", "trickle"]


def crs(url: str) -> list[dict[str, Any]]:
    attacks = NON_STREAMED + STREAMED
    return [provider("evil", baseURL=url),
            *[route(name, [{"provider": "evil", "model": name}], retry={"attempts": 1})
              for name in attacks],
            virtual_key("team", secretName="team-key")]


@pytest.fixture
async def attacked(tmp_path: Path) -> AsyncIterator[tuple[SidecarProcess, HostileUpstream]]:
    upstream = await HostileUpstream().start()
    sidecar = SidecarProcess(tmp_path, crs(upstream.url), **FLAGS)
    try:
        await sidecar.ready()
        yield sidecar, upstream
    finally:
        sidecar.kill()
        await upstream.close()


async def probe_while(sidecar: SidecarProcess, task: asyncio.Future[Any]) -> int:
    """Probe /healthz until `task` ends; how many probes answered (every one must)."""
    answered = 0
    while not task.done():
        assert await sidecar.healthy(timeout=5), "/healthz stopped answering during the attack"
        answered += 1
        await asyncio.sleep(0.1)
    return answered


async def post(sidecar: SidecarProcess, body: dict[str, Any]) -> tuple[int, bytes]:
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.post(sidecar.url + "/v1/chat/completions", json=body,
                                headers=AUTH) as response:
            return response.status, await response.read()


@pytest.mark.parametrize(("attack", "status", "code"), [
    ("gzip-bomb", 502, "upstream_malformed_response"),
    ("huge-json", 502, "upstream_malformed_response"),
    ("huge-error", 502, "upstream_server_error"),
    ("negative-usage", 502, "upstream_malformed_response"),
    ("no-headers", 504, "upstream_timeout"),
])
async def test_hostile_answers_are_bounded_errors_in_the_envelope(
        attacked: tuple[SidecarProcess, HostileUpstream], attack: str, status: int,
        code: str) -> None:
    sidecar, _ = attacked
    before = sidecar.rss()
    sidecar.reset_peak()
    task = asyncio.ensure_future(post(sidecar, chat_body(attack)))
    await probe_while(sidecar, task)
    got, body = task.result()
    assert got == status, body[:300]
    error = orjson.loads(body)["error"]
    assert error["code"] == code and error["type"] and error["message"]
    assert sidecar.peak() - before < ATTACK_RSS, (
        f"{attack}: peak RSS {sidecar.peak() / MIB:.0f} MiB, before {before / MIB:.0f} MiB")
    assert await sidecar.healthy()


@pytest.mark.parametrize("attack", STREAMED)
async def test_hostile_streams_end_with_an_in_band_error(
        attacked: tuple[SidecarProcess, HostileUpstream], attack: str) -> None:
    sidecar, _ = attacked
    before = sidecar.rss()
    sidecar.reset_peak()
    task = asyncio.ensure_future(post(sidecar, chat_body(attack, stream=True)))
    await probe_while(sidecar, task)
    status, body = task.result()
    assert status == 200  # committed after the first chunk: the error comes in-band
    text = body.decode()
    assert '"first"' in text
    assert '"error"' in text.split('"first"', 1)[1], text[-500:]
    assert "[DONE]" not in text
    assert sidecar.peak() - before < ATTACK_RSS, (
        f"{attack}: peak RSS {sidecar.peak() / MIB:.0f} MiB, before {before / MIB:.0f} MiB")
