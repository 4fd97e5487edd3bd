"""A fake upstream of every provider kind (and the built-in mock) behind a gateway route
`chat`, for the tests that run one inbound API against every provider."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fakes.anthropic_upstream import fake_anthropic
from tests.fakes.azure_upstream import fake_azure
from tests.fakes.bedrock_upstream import ACCESS_KEY_ID, SECRET_ACCESS_KEY, fake_bedrock
from tests.fakes.cohere_upstream import fake_cohere
from tests.fakes.gemini_upstream import TokenEndpoint, fake_gemini, fake_vertex
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.replay import ReplayUpstream
from tests.sidecar.harness import KEY, Gateway
from tests.sidecar.providers.e2e import gateway_for
from tests.sidecar.providers.gcp_key import service_account_key

# A bedrock ProviderSecret's spec with the fake's keys (its signature check passes).
AWS_SPEC: dict[str, Any] = {
    "api_key": False, "secrets": {"aws": {"id": ACCESS_KEY_ID, "secret": SECRET_ACCESS_KEY}},
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
    # Settings that depend on the started fake (e.g. a key naming its token endpoint).
    setup: Callable[[Any], dict[str, Any]] | None = None
    # The get_weather arguments it answers with when tools are offered and required.
    arguments: dict[str, Any] = field(default_factory=lambda: {"city": "Paris"})
    name: str = ""  # the test id, when not the kind

    @property
    def id(self) -> str:
        return self.name or self.kind


async def _openai() -> FakeOpenAI:
    fake = await FakeOpenAI().start()
    fake.tool_calls_when_offered = True
    return fake


async def start_vertex(scripted: str = "gemini") -> ReplayUpstream:
    """The Vertex fake with a service-account key for its token endpoint (`vertex_spec`);
    `scripted`: where scripted replies are read from (see `fake_vertex`)."""
    tokens = TokenEndpoint("")
    fake = await fake_vertex(tokens, scripted).start()
    key, tokens.public_key_pem = service_account_key(fake.url + "/token")
    _VERTEX_KEYS[fake.url] = key
    return fake


_VERTEX_KEYS: dict[str, str] = {}


def vertex_spec(fake: ReplayUpstream) -> dict[str, Any]:
    return {"gcp": {"project": "acme", "location": "europe-west4",
                    "serviceAccountKey": {"secretKeyRef": {"name": "gcp", "key": "sa.json"}}},
            "secrets": {"gcp": {"sa.json": _VERTEX_KEYS.pop(fake.url)}}}


UPSTREAMS = [
    Upstream("openai-compatible", "gpt-4o-mini", "Hello from the fake upstream", _openai),
    Upstream("azure-openai", "gpt4o-prod", "Hello from Azure", lambda: fake_azure().start(),
             spec={"azure": {"apiVersion": "2024-10-21"}}),
    Upstream("anthropic", "claude-sonnet-4-5", "Hello from Claude",
             lambda: fake_anthropic().start()),
    Upstream("gemini", "gemini-2.0-flash", "Hello from Gemini", lambda: fake_gemini().start(),
             suffix="/v1beta"),
    Upstream("vertex-ai", "gemini-2.0-flash", "Hello from Gemini", start_vertex, suffix="/v1",
             spec={"api_key": False}, setup=vertex_spec),
    Upstream("vertex-ai", "claude-sonnet-4-5@20250929", "Hello from Claude", start_vertex,
             suffix="/v1", spec={"api_key": False}, setup=vertex_spec, name="vertex-ai-claude"),
    Upstream("bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0", "Hello from Bedrock",
             lambda: fake_bedrock().start(), spec=AWS_SPEC),
    Upstream("cohere", "command-a-03-2025", "Hello from Cohere", lambda: fake_cohere().start()),
    Upstream("mock", "mock-1", "Hello from the mock", None,
             spec={"api_key": False, "mock": {"reply": "Hello from the mock"}},
             arguments={"city": "mock"}),
]


@pytest.fixture(params=UPSTREAMS, ids=[u.id for u in UPSTREAMS])
async def served(request: pytest.FixtureRequest, tmp_path: Path
                 ) -> AsyncIterator[tuple[Upstream, Gateway]]:
    case: Upstream = request.param
    fake = await case.start() if case.start else None
    spec = dict(case.spec)
    if fake is not None:
        spec["baseURL"] = fake.url + case.suffix
    if case.setup is not None:
        spec.update(case.setup(fake))
    gw = await gateway_for(tmp_path, case.kind, case.model, **spec)
    try:
        yield case, gw
    finally:
        await gw.close()
        if fake is not None:
            await fake.close()


async def sse_events(gw: Gateway, path: str, body: dict[str, Any]) -> list[tuple[str, str]]:
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
