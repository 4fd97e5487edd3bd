"""Every inbound dialect by every provider kind, streamed: the official SDK of the dialect gets
the whole text, and the raw stream read to its very end (past the point where an SDK stops
listening) holds no in-band error and ends with the dialect's own end marker.

Why read past the SDK: the OpenAI SDK stops at `data: [DONE]`, so anything the gateway writes
after it is invisible there, while the Anthropic SDK reads until `message_stop`, which comes
last. Cohere ends its streams with `data: [DONE]` after `message-end`; decoding that trailer
once turned finished answers into `stream event is not JSON` for Anthropic-SDK clients only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.fakes.anthropic_upstream import fake_anthropic
from tests.fakes.azure_upstream import fake_azure
from tests.fakes.bedrock_upstream import ACCESS_KEY_ID, SECRET_ACCESS_KEY, fake_bedrock
from tests.fakes.cohere_upstream import fake_cohere
from tests.fakes.gemini_upstream import fake_gemini
from tests.fakes.openai_upstream import FakeOpenAI
from tests.sidecar.harness import KEY, Gateway
from tests.sidecar.inbound.anthropic_client import HELLO, anthropic_client
from tests.sidecar.providers.e2e import MESSAGES, client, gateway_for

_AWS = {"api_key": False, "secrets": {"aws": {"id": ACCESS_KEY_ID, "secret": SECRET_ACCESS_KEY}},
        "aws": {"region": "eu-central-1",
                "accessKeyId": {"secretKeyRef": {"name": "aws", "key": "id"}},
                "secretAccessKey": {"secretKeyRef": {"name": "aws", "key": "secret"}}}}


@dataclass(frozen=True)
class Upstream:
    kind: str
    model: str
    text: str
    start: Callable[[], Awaitable[Any]] | None  # -> a started fake with .url and .close()
    suffix: str = ""
    spec: dict[str, Any] = field(default_factory=dict)


async def _openai() -> FakeOpenAI:
    return await FakeOpenAI().start()


UPSTREAMS = [
    Upstream("openai-compatible", "gpt-4o-mini", "Hello from the fake upstream", _openai),
    Upstream("azure-openai", "gpt4o-prod", "Hello from Azure", lambda: fake_azure().start(),
             spec={"azure": {"apiVersion": "2024-10-21"}}),
    Upstream("anthropic", "claude-sonnet-4-5", "Hello from Claude",
             lambda: fake_anthropic().start()),
    Upstream("gemini", "gemini-2.0-flash", "Hello from Gemini", lambda: fake_gemini().start(),
             suffix="/v1beta"),
    Upstream("bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0", "Hello from Bedrock",
             lambda: fake_bedrock().start(), spec=_AWS),
    Upstream("cohere", "command-a-03-2025", "Hello from Cohere", lambda: fake_cohere().start()),
    Upstream("mock", "mock-1", "Hello from the mock", None,
             spec={"api_key": False, "mock": {"reply": "Hello from the mock"}}),
]


@pytest.fixture(params=UPSTREAMS, ids=[u.kind for u in UPSTREAMS])
async def served(request: pytest.FixtureRequest, tmp_path: Path
                 ) -> AsyncIterator[tuple[Upstream, Gateway]]:
    case: Upstream = request.param
    fake = await case.start() if case.start else None
    spec = dict(case.spec)
    if fake is not None:
        spec["baseURL"] = fake.url + case.suffix
    gw = await gateway_for(tmp_path, case.kind, case.model, **spec)
    try:
        yield case, gw
    finally:
        await gw.close()
        if fake is not None:
            await fake.close()


async def _raw(gw: Gateway, path: str, body: dict[str, Any]) -> list[tuple[str, str]]:
    """(event name, data) of every SSE event, reading the response body to its end."""
    async with aiohttp.ClientSession() as session, session.post(
            gw.url + path, json=body, headers={"Authorization": f"Bearer {KEY}"}) as response:
        assert response.status == 200, await response.text()
        raw = (await response.read()).decode()
    events = []
    for block in raw.replace("\r\n", "\n").split("\n\n"):
        name, data = "", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            events.append((name, "\n".join(data)))
    return events


async def test_chat_completions_stream(served: tuple[Upstream, Gateway]) -> None:
    case, gw = served
    async with client(gw) as c:
        stream = await c.chat.completions.create(model="chat", messages=MESSAGES, stream=True,
                                                 stream_options={"include_usage": True})
        chunks = [chunk async for chunk in stream]
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) \
        == case.text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    events = await _raw(gw, "/v1/chat/completions",
                        {"model": "chat", "messages": MESSAGES, "stream": True})
    assert events[-1][1] == "[DONE]"
    bodies = [orjson.loads(data) for _, data in events[:-1]]
    assert not [b for b in bodies if "error" in b], bodies
    assert all(b["object"] == "chat.completion.chunk" for b in bodies)


async def test_messages_stream(served: tuple[Upstream, Gateway]) -> None:
    case, gw = served
    async with anthropic_client(gw) as c, c.messages.stream(
            model="chat", max_tokens=64, messages=HELLO) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == case.text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    events = await _raw(gw, "/v1/messages", {"model": "chat", "max_tokens": 64,
                                             "messages": HELLO, "stream": True})
    names = [name for name, _ in events]
    assert "error" not in names, events
    assert names[0] == "message_start" and names[-1] == "message_stop"
