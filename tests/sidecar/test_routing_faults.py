"""Every upstream fault before the first byte, against the programmable fake upstream.

The real app on loopback, with a `Router` whose sleep only records (retries cost no time and
their waits are exact) and a seeded random source. Each case asserts which target served,
how many attempts it took, what the client saw, and what the routing waited.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web
from llmgate_sidecar.api.state import METRICS
from llmgate_sidecar.app import api_runner, create_app
from llmgate_sidecar.observability.metrics import Metrics
from llmgate_sidecar.routing.router import Router
from llmgate_sidecar.settings import SidecarSettings

from tests.fakes.openai_upstream import Behaviour, FakeOpenAI
from tests.sidecar.harness import KEY, compile_to, provider, route, virtual_key

MESSAGES = [{"role": "user", "content": "Say hello"}]
PRIMARY_TEXT = "Hello from the fake upstream"
BACKUP_TEXT = "Second target here"


class FakeTime:
    """Router clock and sleep: time moves only when the router sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class Rig:
    url: str
    app: web.Application
    runner: web.AppRunner
    time: FakeTime
    primary: FakeOpenAI
    backup: FakeOpenAI

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=KEY, max_retries=0,
                                  timeout=20)

    async def ask(self, **extra: Any) -> tuple[int, dict[str, str], Any]:
        """POST a chat completion; (status, headers, JSON body or SSE text)."""
        body = {"model": "chat", "messages": MESSAGES, **extra}
        async with aiohttp.ClientSession() as session, session.post(
                self.base_url + "/chat/completions", json=body,
                headers={"Authorization": f"Bearer {KEY}"}) as response:
            payload: Any = await response.text()
            if response.content_type == "application/json":
                payload = await response.json()
            return response.status, dict(response.headers), payload


async def start_rig(root: Path, primary: FakeOpenAI, backup: FakeOpenAI, *,
                    primary_spec: dict[str, Any] | None = None, real_time: bool = False,
                    single: bool = False, **route_spec: Any) -> Rig:
    targets = [{"provider": "primary", "model": "up-1", **(primary_spec or {})},
               {"provider": "backup", "model": "up-2"}]
    resources = [
        provider("primary", baseURL=primary.url), provider("backup", baseURL=backup.url),
        route("chat", targets[:1] if single else targets, **route_spec),
        virtual_key("team", secretName="team-key")]
    compile_to(root, resources, {"team-key": {"api-key": KEY}})
    fake_time = FakeTime()
    metrics = Metrics()
    router = Router(metrics, rng=random.Random(7)) if real_time else Router(
        metrics, rng=random.Random(7), clock=fake_time, sleep=fake_time.sleep)
    settings = SidecarSettings(config_dir=str(root / "config"),
                               credentials_dir=str(root / "credentials"), reload_interval=60)
    app = create_app(settings, metrics=metrics, router=router)
    runner = api_runner(app, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return Rig(f"http://127.0.0.1:{port}", app, runner, fake_time, primary, backup)


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeOpenAI, FakeOpenAI]]:
    primary, backup = await FakeOpenAI().start(), await FakeOpenAI().start()
    backup.default = Behaviour(content=BACKUP_TEXT)
    yield primary, backup
    await primary.close()
    await backup.close()


@pytest.fixture
async def rig_factory(tmp_path: Path, fakes: tuple[FakeOpenAI, FakeOpenAI]
                      ) -> AsyncIterator[Any]:
    rigs: list[Rig] = []

    async def make(primary: dict[str, Any] | None = None, real_time: bool = False,
                   single: bool = False, **route_spec: Any) -> Rig:
        rig = await start_rig(tmp_path / str(len(rigs)), *fakes, primary_spec=primary,
                              real_time=real_time, single=single, **route_spec)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        await rig.runner.cleanup()


def served_by(headers: dict[str, str]) -> tuple[str, str]:
    return headers["x-llmgate-provider"], headers["x-llmgate-attempts"]


RETRY_TWICE = {"retry": {"attempts": 2, "backoff": {"initial": "200ms", "max": "5s"}}}


@pytest.mark.parametrize(("headers", "wait"), [
    ({"retry-after": "1"}, 1.0),
    ({"retry-after-ms": "1500"}, 1.5),
    ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # the precise header wins
])
async def test_429_with_retry_after_is_retried_on_the_same_target_after_that_wait(
        rig_factory: Any, headers: dict[str, str], wait: float) -> None:
    rig = await rig_factory(**RETRY_TWICE)
    rig.primary.script.append(Behaviour(kind="status", status=429, headers=headers))
    status, response_headers, body = await rig.ask()
    assert status == 200 and body["choices"][0]["message"]["content"] == PRIMARY_TEXT
    assert served_by(response_headers) == ("primary", "2")
    assert rig.time.sleeps == [wait]
    assert rig.backup.requests == []


async def test_429_without_retry_after_backs_off_with_jitter_under_the_cap(
        rig_factory: Any) -> None:
    rig = await rig_factory(retry={"attempts": 3, "backoff": {"initial": "1s", "max": "1500ms"}})
    rig.primary.script.extend([Behaviour(kind="status", status=429)] * 2)
    status, headers, _ = await rig.ask()
    assert status == 200 and served_by(headers) == ("primary", "3")
    # Full jitter: uniform in [0, min(max, initial * 2^n)].
    assert len(rig.time.sleeps) == 2
    assert 0 <= rig.time.sleeps[0] <= 1.0 and 0 <= rig.time.sleeps[1] <= 1.5


async def test_429_asking_for_longer_than_backoff_max_moves_to_the_next_target(
        rig_factory: Any) -> None:
    rig = await rig_factory(**RETRY_TWICE)
    rig.primary.script.append(Behaviour(kind="status", status=429,
                                        headers={"retry-after": "30"}))
    status, headers, body = await rig.ask()
    assert status == 200 and body["choices"][0]["message"]["content"] == BACKUP_TEXT
    assert served_by(headers) == ("backup", "2")
    assert rig.time.sleeps == []


SHORT_BACKOFF = {"attempts": 3, "backoff": {"initial": "50ms", "max": "200ms"}}


async def test_with_no_other_target_the_server_requested_wait_is_honoured(
        rig_factory: Any) -> None:
    """One target, 429 with Retry-After: 1 above backoff.max: waiting is what the client
    wants (nothing else could answer sooner), so the same target is retried after 1 s."""
    rig = await rig_factory(single=True, retry=SHORT_BACKOFF)
    rig.primary.script.append(Behaviour(kind="status", status=429,
                                        headers={"retry-after": "1"}))
    status, headers, body = await rig.ask()
    assert status == 200 and body["choices"][0]["message"]["content"] == PRIMARY_TEXT
    assert served_by(headers) == ("primary", "2")
    assert rig.time.sleeps == [1.0]


async def test_a_target_that_cannot_fall_back_waits_too(rig_factory: Any) -> None:
    rig = await rig_factory(retry=SHORT_BACKOFF, fallbackOn=["serverError"])
    rig.primary.script.append(Behaviour(kind="status", status=429,
                                        headers={"retry-after": "2"}))
    status, headers, _ = await rig.ask()
    assert status == 200 and served_by(headers) == ("primary", "2")
    assert rig.time.sleeps == [2.0] and rig.backup.requests == []


@pytest.mark.parametrize(("route_spec", "retry_after"), [
    ({"timeout": "800ms"}, "1"),  # the wait would outlast the route's deadline
    ({}, "120"),  # no deadline: more than SERVER_WAIT_MAX (30 s) is not waited for
])
async def test_with_no_other_target_a_wait_too_long_answers_429_at_once(
        rig_factory: Any, route_spec: dict[str, Any], retry_after: str) -> None:
    rig = await rig_factory(single=True, retry=SHORT_BACKOFF, **route_spec)
    rig.primary.script.append(Behaviour(kind="status", status=429,
                                        headers={"retry-after": retry_after}))
    status, headers, _ = await rig.ask()
    assert status == 429 and headers["Retry-After"] == retry_after
    assert rig.time.sleeps == [] and len(rig.primary.requests) == 1


async def test_429_whose_wait_passes_the_deadline_skips_to_the_next_target(
        rig_factory: Any) -> None:
    rig = await rig_factory(timeout="2s", **RETRY_TWICE)
    rig.primary.script.append(Behaviour(kind="status", status=429,
                                        headers={"retry-after": "3"}))
    status, headers, _ = await rig.ask()
    assert status == 200 and served_by(headers) == ("backup", "2")
    assert rig.time.sleeps == []


async def test_429_everywhere_reaches_the_client_as_429_with_retry_after(
        rig_factory: Any) -> None:
    rig = await rig_factory()
    rig.primary.script.append(Behaviour(kind="status", status=429))
    rig.backup.script.append(Behaviour(kind="status", status=429,
                                       headers={"retry-after": "7"}))
    status, headers, body = await rig.ask()
    assert status == 429 and headers["Retry-After"] == "7"
    assert body["error"]["code"] == "rate_limit_exceeded"  # OpenAI's code, apps know it
    assert body["error"]["llmgate"]["code"] == "upstream_rate_limited"
    assert "after 2 attempts" in body["error"]["message"]


@pytest.mark.parametrize("code", [500, 502, 503])
async def test_server_errors_are_retried_then_succeed_on_the_same_target(
        rig_factory: Any, code: int) -> None:
    rig = await rig_factory(**RETRY_TWICE)
    rig.primary.script.append(Behaviour(kind="status", status=code))
    status, headers, _ = await rig.ask()
    assert status == 200 and served_by(headers) == ("primary", "2")
    assert len(rig.time.sleeps) == 1 and 0 <= rig.time.sleeps[0] <= 0.2


async def test_status_outside_on_status_is_not_retried_but_falls_back(
        rig_factory: Any) -> None:
    rig = await rig_factory(retry={"attempts": 3, "onStatus": [503]})
    rig.primary.script.append(Behaviour(kind="status", status=500))
    status, headers, _ = await rig.ask()
    assert status == 200 and served_by(headers) == ("backup", "2")
    assert len(rig.primary.requests) == 1 and rig.time.sleeps == []


async def test_error_class_outside_fallback_on_stops_at_the_first_target(
        rig_factory: Any) -> None:
    rig = await rig_factory(fallbackOn=["timeout"])
    rig.primary.script.append(Behaviour(kind="status", status=503))
    status, _, body = await rig.ask()
    assert status == 502 and body["error"]["code"] == "upstream_server_error"
    assert rig.backup.requests == []


async def test_rejected_provider_credentials_fall_back(rig_factory: Any) -> None:
    rig = await rig_factory()
    rig.primary.script.append(Behaviour(kind="status", status=401, body={
        "error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}))
    status, headers, _ = await rig.ask()
    assert status == 200 and served_by(headers) == ("backup", "2")


async def test_slow_first_byte_hits_the_target_timeout_and_falls_back(
        rig_factory: Any) -> None:
    rig = await rig_factory(primary={"timeout": "300ms"})
    rig.primary.script.append(Behaviour(delay=30))
    status, headers, body = await rig.ask()
    assert status == 200 and body["choices"][0]["message"]["content"] == BACKUP_TEXT
    assert served_by(headers) == ("backup", "2")
    assert rig.app[METRICS].upstream_errors.labels("primary", "timeout")._value.get() == 1


async def test_slow_first_byte_of_a_stream_hits_the_target_timeout_and_falls_back(
        rig_factory: Any) -> None:
    rig = await rig_factory(primary={"timeout": "300ms"})
    rig.primary.script.append(Behaviour(delay=30))
    status, headers, text = await rig.ask(stream=True)
    assert status == 200 and served_by(headers) == ("backup", "2")
    assert "Second" in text and text.rstrip().endswith("data: [DONE]")


@pytest.mark.parametrize("failure", [
    Behaviour(kind="reset"),
    Behaviour(kind="malformed"),
    Behaviour(kind="status", status=500, body={"unexpected": True}),
])
async def test_reset_and_malformed_answers_fall_back(rig_factory: Any,
                                                     failure: Behaviour) -> None:
    rig = await rig_factory()
    rig.primary.script.append(failure)
    status, headers, _ = await rig.ask()
    assert status == 200 and served_by(headers) == ("backup", "2")


@pytest.mark.parametrize("failure", [
    Behaviour(kind="reset"),
    Behaviour(kind="status", status=503),
    Behaviour(kind="cut", chunks_before=0),
    Behaviour(kind="error_event", chunks_before=0),
    Behaviour(kind="malformed_event"),
])
async def test_stream_failures_before_the_first_byte_fall_back_invisibly(
        rig_factory: Any, failure: Behaviour) -> None:
    rig = await rig_factory()
    rig.primary.script.append(failure)
    async with rig.client() as c:
        raw = await c.chat.completions.with_raw_response.create(
            model="chat", messages=MESSAGES, stream=True)
        text = "".join([ch.choices[0].delta.content or "" async for ch in raw.parse()
                        if ch.choices])
    assert text == BACKUP_TEXT
    assert raw.headers["x-llmgate-provider"] == "backup"
    assert raw.headers["x-llmgate-attempts"] == "2"


async def test_route_deadline_bounds_retries_and_backoff_across_targets(
        rig_factory: Any) -> None:
    rig = await rig_factory(timeout="2s", retry={
        "attempts": 10, "backoff": {"initial": "500ms", "max": "1s"}})
    rig.primary.default = rig.backup.default = Behaviour(kind="status", status=500)
    status, _, body = await rig.ask()
    # The last attempt ends as the upstream's 500, or, when the fake time left is shorter
    # than that attempt's real round trip (a loaded machine), as the deadline's timeout: the
    # attempt timeout is the fake time left, enforced in real time.
    assert (status, body["error"]["code"]) in ((502, "upstream_server_error"),
                                               (504, "upstream_timeout")), body
    # Router time only moves while it sleeps: every wait it took fits inside the deadline,
    # and it gave up long before the 20 attempts it was configured for.
    assert sum(rig.time.sleeps) < 2.0
    attempts = len(rig.primary.requests) + len(rig.backup.requests)
    assert 2 <= attempts < 20
    assert f"after {attempts} attempts" in body["error"]["message"]


async def test_route_deadline_ends_a_slow_first_byte_with_504_and_no_fallback(
        rig_factory: Any) -> None:
    rig = await rig_factory(timeout="500ms", real_time=True)
    rig.primary.script.append(Behaviour(delay=30))
    status, _, body = await rig.ask()
    assert status == 504 and body["error"]["code"] == "upstream_timeout"
    assert rig.backup.requests == []  # no time was left to try it


async def test_route_deadline_also_bounds_a_committed_stream(rig_factory: Any) -> None:
    rig = await rig_factory(timeout="1s", real_time=True)
    words = " ".join(f"w{i}" for i in range(40))
    rig.primary.script.append(Behaviour(content=words, chunk_delay=0.2))
    status, headers, text = await rig.ask(stream=True)
    assert status == 200 and headers["x-llmgate-provider"] == "primary"
    events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert "[DONE]" not in events
    assert '"code":"timeout"' in events[-1] and "timeout passed mid-stream" in events[-1]
    assert 1 <= len(events) - 1 < 40
