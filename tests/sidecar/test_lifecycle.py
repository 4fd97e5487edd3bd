"""Every endpoint books the same way, because every endpoint runs the one request lifecycle.

Parametrised over every entry of `api.endpoints.ENDPOINTS` (a new endpoint without a case
here fails `test_every_endpoint_has_a_case`), and over the in-memory store and the Redis
store on the session's real redis-server. Each test drives one way a request can end
without a clean answer and reads the key's spend back from the store:

- the client leaves while the upstream call is under way: the whole reservation is booked;
- the client leaves after the answer started (streamed endpoints): the whole reservation;
- the route deadline passes before the answer: the whole reservation (the upstream received
  the call and bills it; the client gets a 504);
- the route deadline passes mid-answer (streamed endpoints): the whole reservation;
- the upstream fails with an error status: nothing is booked (502).

In every case the reservation is released (nothing stays reserved). The upstream is a fake
OpenAI on loopback that answers every path and can stall or fail on demand.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from llmgate_sidecar.api.dialects import ChunkTranslator
from llmgate_sidecar.api.endpoints import ENDPOINTS
from llmgate_sidecar.api.lifecycle import CachedEndpoint, Endpoint, Exchange
from llmgate_sidecar.policy.accounting import FREE, Reservation
from llmgate_sidecar.routing.router import Attempt

from tests.fakes import serve_on_loopback
from tests.sidecar.harness import KEY, Gateway, provider, route, start_gateway, virtual_key
from tests.sidecar.redis_server import RedisServer

# $1 per token either way: every endpoint's reservation is well above zero.
PRICING = {"up-model": {"inputPerMillion": "1000000", "outputPerMillion": "1000000"}}
KEY_REF = {"secretKeyRef": {"name": "up-cred", "key": "api-key"}}
DEADLINE = 0.4  # seconds, the `timed` route's
HOLD = 5.0  # how long the fake upstream stalls (the tests end it sooner)


@dataclass(frozen=True)
class Case:
    path: str
    json: dict[str, Any] | None = None  # None: multipart
    streamed: bool = False  # the answer is written as it arrives (SSE or raw bytes)
    routes: str = ""  # "-claude": the routes to an anthropic target (Anthropic-only paths)
    free: bool = False  # reserves nothing (counting tokens costs nothing)

    @property
    def id(self) -> str:
        stream = "-stream" if self.json and self.json.get("stream") else ""
        return self.path.removeprefix("/v1/").replace("/", "-") + stream


CHAT = {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 10}
CASES = [
    Case("/v1/chat/completions", CHAT),
    Case("/v1/chat/completions", {**CHAT, "stream": True}, streamed=True),
    Case("/v1/messages", CHAT),
    Case("/v1/messages", {**CHAT, "stream": True}, streamed=True),
    Case("/v1/messages/count_tokens", {"messages": CHAT["messages"]}, routes="-claude",
         free=True),
    Case("/v1/embeddings", {"input": "hello there"}),
    Case("/v1/responses", {"input": "hello", "max_output_tokens": 10}),
    Case("/v1/responses", {"input": "hello", "max_output_tokens": 10, "stream": True},
         streamed=True),
    Case("/v1/completions", {"prompt": "hello", "max_tokens": 10}),
    Case("/v1/images/generations", {"prompt": "a cat"}),
    Case("/v1/audio/speech", {"input": "hello", "voice": "alloy"}, streamed=True),
    Case("/v1/audio/transcriptions", None),
    Case("/v1/audio/translations", None),
    Case("/v1/moderations", {"input": "hello"}),
]
STREAMED = [case for case in CASES if case.streamed]


class StallingUpstream:
    """A fake OpenAI answering every path the gateway sends upstream, in one of three modes:
    `stall` (no answer until released), `fail` (a 500), `trickle` (the answer starts with
    its first event or bytes, then stalls). Records arrivals and disconnects."""

    def __init__(self) -> None:
        self.mode = "stall"
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        self.disconnects = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> StallingUpstream:
        app = web.Application()
        app.router.add_post("/v1/{path:.*}", self._handle)
        self._runner, port = await serve_on_loopback(
            app, shutdown_timeout=0.2, handler_cancellation=True)
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def close(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.arrived.set()
        if self.mode == "fail":
            return web.json_response({"error": {"message": "boom", "type": "server_error"}},
                                     status=500)
        try:
            if self.mode == "stall":
                await asyncio.wait_for(self.release.wait(), HOLD)
                return web.json_response({"error": {"message": "late"}}, status=500)
            return await self._trickle(request)
        except asyncio.CancelledError:
            self.disconnects += 1
            raise

    async def _trickle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/v1/audio/speech":
            response = web.StreamResponse(headers={"Content-Type": "audio/mpeg"})
            first = b"ID3" + bytes(64)
        elif path == "/v1/responses":
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            first = b'event: response.created\ndata: {"type":"response.created"}\n\n'
        else:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            first = b"data: " + orjson.dumps({
                "id": "c1", "object": "chat.completion.chunk", "created": 1,
                "model": "up-model", "choices": [{"index": 0, "delta": {
                    "role": "assistant", "content": "Hel"}, "finish_reason": None}]}) + b"\n\n"
        await response.prepare(request)
        await response.write(first)
        await asyncio.wait_for(self.release.wait(), HOLD)
        return response


@pytest.fixture
async def upstream() -> AsyncIterator[StallingUpstream]:
    fake = await StallingUpstream().start()
    yield fake
    await fake.close()


@pytest.fixture(params=["memory", "redis"])
async def gateway(request: pytest.FixtureRequest, tmp_path: Path,
                  upstream: StallingUpstream) -> AsyncIterator[Gateway]:
    settings: dict[str, Any] = {}
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        url = server.url.removesuffix("/0") + "/9"  # a database of its own
        client = aioredis.from_url(url)
        await client.flushdb()
        await client.aclose()
        settings["redis_url"] = url
    targets = [{"provider": "up", "model": "up-model"}]
    gw = await start_gateway(tmp_path, [
        provider("up", "openai", baseURL=upstream.url, apiKey=KEY_REF, pricing=PRICING),
        provider("claude", "anthropic", baseURL=upstream.url, apiKey=KEY_REF),
        route("open", targets, retry={"attempts": 1}),
        route("timed", targets, retry={"attempts": 1}, timeout=f"{int(DEADLINE * 1000)}ms"),
        route("open-claude", [{"provider": "claude", "model": "up-model"}],
              retry={"attempts": 1}),
        route("timed-claude", [{"provider": "claude", "model": "up-model"}],
              retry={"attempts": 1}, timeout=f"{int(DEADLINE * 1000)}ms"),
        virtual_key("team", secretName="team-key",
                    budget={"limit": "1000000.00", "period": "1d"}),
    ], {"up-cred": {"api-key": "sk-upstream-0123456789"}}, **settings)
    yield gw
    await gw.close()


def send(session: aiohttp.ClientSession, gw: Gateway, case: Case,
         model: str) -> Any:
    """The request of `case` for route `model`, as the official SDKs would send it."""
    headers = {"Authorization": f"Bearer {KEY}"}
    url = gw.url + case.path
    if case.json is None:
        form = aiohttp.FormData()
        form.add_field("model", model)
        form.add_field("file", b"ID3" + bytes(256), filename="clip.mp3",
                       content_type="audio/mpeg")
        return session.post(url, data=form, headers=headers)
    return session.post(url, json={"model": model + case.routes, **case.json},
                        headers=headers)


async def reserved_in_flight(gw: Gateway, case: Case) -> Decimal:
    reserved = (await gw.spend())[1]
    # Admitted: the worst case is held while the call runs (nothing for a free endpoint).
    assert reserved == 0 if case.free else reserved > 0
    return reserved


def test_every_endpoint_has_a_case() -> None:
    assert {case.path for case in CASES} == {endpoint.path for endpoint in ENDPOINTS}


def test_an_endpoint_missing_a_step_cannot_exist() -> None:
    """The endpoint contract is abstract (mypy --strict refuses the same classes before
    they run): an endpoint without `reply`, or a cached one without `replay`, is refused."""

    class NoReply(Endpoint[Any]):
        path = "/v1/nothing"

        def parse(self, request: web.Request, raw: bytes) -> Any:
            return None

        def reserve(self, exchange: Exchange[Any]) -> Reservation:
            return FREE

        def attempt(self, exchange: Exchange[Any]) -> Attempt:
            raise AssertionError

    class NoReplay(NoReply):
        async def reply(self, exchange: Exchange[Any], served: Any) -> web.StreamResponse:
            return web.Response()

    class CachedNoReplay(CachedEndpoint[Any], NoReplay):
        pass

    with pytest.raises(TypeError, match="reply"):
        NoReply()  # type: ignore[abstract]
    assert NoReplay().path == "/v1/nothing"
    with pytest.raises(TypeError, match="replay"):
        CachedNoReplay()  # type: ignore[abstract]
    with pytest.raises(TypeError, match="_chunk"):
        ChunkTranslator()  # type: ignore[abstract]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
async def test_client_leaving_before_the_answer_books_the_reservation(
        gateway: Gateway, upstream: StallingUpstream, case: Case) -> None:
    async with aiohttp.ClientSession() as session:
        request = asyncio.ensure_future(send(session, gateway, case, "open"))
        await asyncio.wait_for(upstream.arrived.wait(), 5)
        reserved = await reserved_in_flight(gateway, case)
        request.cancel()  # the client gives up and closes its connection
        with pytest.raises(asyncio.CancelledError):
            await request
    assert (await gateway.settled())[0] == reserved
    for _ in range(200):  # and the upstream call was closed, not left running
        if upstream.disconnects:
            break
        await asyncio.sleep(0.01)
    assert upstream.disconnects == 1


@pytest.mark.parametrize("case", STREAMED, ids=lambda c: c.id)
async def test_client_leaving_mid_answer_books_the_reservation(
        gateway: Gateway, upstream: StallingUpstream, case: Case) -> None:
    upstream.mode = "trickle"
    async with aiohttp.ClientSession() as session:
        response = await send(session, gateway, case, "open")
        assert response.status == 200
        await response.content.readany()  # the answer started
        reserved = await reserved_in_flight(gateway, case)
        response.close()  # the client goes away
    # No usage arrived before the client left: the whole reservation.
    assert (await gateway.settled())[0] == reserved


@pytest.mark.parametrize("case", STREAMED, ids=lambda c: c.id)
async def test_deadline_mid_answer_books_the_reservation(
        gateway: Gateway, upstream: StallingUpstream, case: Case) -> None:
    upstream.mode = "trickle"
    async with aiohttp.ClientSession() as session, send(
            session, gateway, case, "timed") as response:
        assert response.status == 200
        reserved = await reserved_in_flight(gateway, case)
        try:
            await response.read()  # ends at the deadline: an in-band error or a cut body
        except aiohttp.ClientPayloadError:
            pass  # a binary body can only be cut short
    assert (await gateway.settled())[0] == reserved


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
async def test_deadline_before_the_answer_books_the_reservation(
        gateway: Gateway, upstream: StallingUpstream, case: Case) -> None:
    """The upstream received the call and bills it even though the client got its 504."""
    upstream.mode = "stall"
    async with aiohttp.ClientSession() as session:
        request = asyncio.ensure_future(send(session, gateway, case, "timed"))
        await asyncio.wait_for(upstream.arrived.wait(), 5)
        reserved = await reserved_in_flight(gateway, case)
        async with await request as response:
            await response.read()
    assert response.status == 504
    assert (await gateway.settled())[0] == reserved


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
async def test_upstream_error_status_books_nothing(gateway: Gateway, upstream: StallingUpstream,
                                                   case: Case) -> None:
    """A 500 from the upstream is not billed: nothing is booked (502)."""
    upstream.mode = "fail"
    async with aiohttp.ClientSession() as session, send(
            session, gateway, case, "open") as response:
        await response.read()
    assert response.status == 502
    assert (await gateway.settled())[0] == 0
