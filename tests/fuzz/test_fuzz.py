"""The fuzz stage: hypothesis-made requests to every endpoint, and hypothesis-made upstream
answers through a fake provider, against the real app on loopback. Invariants: a client's
mistake is never a 5xx, every error carries the envelope of the API called, nothing hangs
past the deadlines, and memory stays bounded. `make test` runs a few dozen examples per
test; `make fuzz` (HYPOTHESIS_PROFILE=fuzz) runs many more."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from llmgate_sidecar.api.endpoints import ENDPOINTS

from tests.fuzz.strategies import bodies, chat_answers, sse_streams
from tests.hostile.sidecar_process import MIB
from tests.sidecar.harness import KEY, Gateway, provider, route, start_gateway, virtual_key

PATHS = sorted(endpoint.path for endpoint in ENDPOINTS)
HANG_GUARD = 15.0  # far above the deadlines configured below
RSS_GROWTH = 128 * MIB  # what one fuzz test may add to the test process (loose: it is shared)


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def assert_envelope(path: str, status: int, body: bytes) -> None:
    data = orjson.loads(body)
    if path == "/v1/messages":
        assert data["type"] == "error" and data["error"]["message"], data
    else:
        assert data["error"]["message"] and data["error"]["type"], data


class AnswerUpstream:
    """An OpenAI-compatible upstream that answers each request with the next drawn answer."""

    def __init__(self) -> None:
        self.answer: bytes | list[bytes] = b"{}"
        self.status = 200
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> AnswerUpstream:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1"  # type: ignore[union-attr]
        return self

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        if isinstance(self.answer, bytes):
            return web.Response(status=self.status, body=self.answer,
                                content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in self.answer:
            await response.write(chunk)
        return response

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def upstream() -> AsyncIterator[AnswerUpstream]:
    fake = await AnswerUpstream().start()
    try:
        yield fake
    finally:
        await fake.close()


@pytest.fixture
async def gateway(tmp_path: Path, upstream: AnswerUpstream) -> AsyncIterator[Gateway]:
    gw = await start_gateway(tmp_path, [
        provider("mock", "mock", mock={"reply": "ok"}),
        provider("fake", baseURL=upstream.url),
        route("m", [{"provider": "mock", "model": "m"}],
              guardrails={"pii": {"action": "redact"}, "blockPatterns": ["(a+)+$"]}),
        route("u", [{"provider": "fake", "model": "u"}], retry={"attempts": 1}),
        virtual_key("team", secretName="team-key")],
        upstream_first_byte_timeout=3, upstream_idle_timeout=3, request_timeout=5,
        client_body_timeout=3)
    try:
        yield gw
    finally:
        await gw.close()


async def send(gw: Gateway, path: str, body: bytes) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        async with session.post(gw.url + path, data=body, headers=headers) as response:
            return response.status, await response.read()


@given(data=st.data())
async def test_no_client_mistake_is_a_5xx(gateway: Gateway, data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(PATHS), label="path")
    body = data.draw(bodies(path), label="body")
    before = rss()
    status, payload = await asyncio.wait_for(send(gateway, path, body), HANG_GUARD)
    assert status < 500, (path, body[:200], payload[:300])
    if status >= 400:
        assert_envelope(path, status, payload)
    assert rss() - before < RSS_GROWTH


@given(answer=chat_answers(), status=st.sampled_from([200, 200, 200, 400, 429, 500, 503]))
async def test_any_upstream_answer_is_a_bounded_well_formed_reply(
        gateway: Gateway, upstream: AnswerUpstream, answer: bytes, status: int) -> None:
    upstream.answer, upstream.status = answer, status
    body = orjson.dumps({"model": "u", "messages": [{"role": "user", "content": "hi"}]})
    got, payload = await asyncio.wait_for(
        send(gateway, "/v1/chat/completions", body), HANG_GUARD)
    assert got != 500, payload[:300]
    if got >= 400:
        assert_envelope("/v1/chat/completions", got, payload)
    else:
        assert orjson.loads(payload)["choices"] is not None


@given(chunks=sse_streams())
async def test_any_upstream_stream_ends_cleanly(gateway: Gateway, upstream: AnswerUpstream,
                                                chunks: list[bytes]) -> None:
    upstream.answer, upstream.status = chunks, 200
    body = orjson.dumps({"model": "u", "stream": True,
                         "messages": [{"role": "user", "content": "hi"}]})
    got, payload = await asyncio.wait_for(
        send(gateway, "/v1/chat/completions", body), HANG_GUARD)
    assert got != 500, payload[:300]
    if got >= 400:
        assert_envelope("/v1/chat/completions", got, payload)
        return
    text = payload.decode()
    # A stream either finishes with [DONE] or says in-band why it did not.
    assert text.rstrip().endswith("data: [DONE]") or '"error"' in text, text[-300:]
