"""Fallback across wire formats: an Anthropic failure before the first byte is answered by
Gemini, and the client sees one consistent OpenAI response either way."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.anthropic_upstream import fake_anthropic
from tests.fakes.gemini_upstream import fake_gemini
from tests.fakes.replay import ReplayUpstream, Reply
from tests.sidecar.harness import Gateway, provider, route, start_gateway, virtual_key
from tests.sidecar.providers.e2e import MESSAGES, client

CRED = {"apiKey": {"secretKeyRef": {"name": "cred", "key": "api-key"}}}


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[ReplayUpstream, ReplayUpstream]]:
    claude, gemini = await fake_anthropic().start(), await fake_gemini().start()
    yield claude, gemini
    await claude.close()
    await gemini.close()


@pytest.fixture
async def gateway(tmp_path: Path, fakes: tuple[ReplayUpstream, ReplayUpstream]
                  ) -> AsyncIterator[Gateway]:
    claude, gemini = fakes
    gw = await start_gateway(tmp_path, [
        provider("claude", "anthropic", baseURL=claude.url, **CRED),
        provider("gemini", "gemini", baseURL=gemini.url + "/v1beta", **CRED),
        route("chat", [{"provider": "claude", "model": "claude-sonnet-4-5"},
                       {"provider": "gemini", "model": "gemini-2.0-flash"}]),
        virtual_key("team", secretName="team-key")], {"cred": {"api-key": "k"}})
    yield gw
    await gw.close()


@pytest.mark.parametrize("failure", [Reply("error_overloaded.json", status=529),
                                     Reply("error_rate_limit.json", status=429),
                                     Reply(reset=True)])
async def test_anthropic_failure_falls_back_to_gemini(
        gateway: Gateway, fakes: tuple[ReplayUpstream, ReplayUpstream], failure: Reply) -> None:
    claude, _ = fakes
    claude.script.append(failure)
    async with client(gateway) as c:
        raw = await c.chat.completions.with_raw_response.create(model="chat",
                                                                messages=MESSAGES)
    assert raw.parse().choices[0].message.content == "Hello from Gemini"
    assert raw.headers["x-llmgate-provider"] == "gemini"
    assert raw.headers["x-llmgate-attempts"] == "2"


async def test_stream_cut_before_the_first_byte_falls_back(
        gateway: Gateway, fakes: tuple[ReplayUpstream, ReplayUpstream]) -> None:
    claude, _ = fakes
    claude.script.append(Reply("stream_text.sse", cut_after=0))
    async with client(gateway) as c:
        stream = await c.chat.completions.create(model="chat", messages=MESSAGES, stream=True)
        text = "".join([ch.choices[0].delta.content or "" async for ch in stream
                        if ch.choices])
    assert text == "Hello from Gemini"
