"""The official `anthropic` SDK against a route to each provider, served by that provider's
fake upstream: the Messages API in front, every wire format behind, plain and streamed, with
usage. (The OpenAI-compatible family and Anthropic itself have their own, deeper files.)"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.azure_upstream import fake_azure
from tests.fakes.bedrock_upstream import ACCESS_KEY_ID, SECRET_ACCESS_KEY, fake_bedrock
from tests.fakes.cohere_upstream import fake_cohere
from tests.fakes.gemini_upstream import fake_gemini
from tests.fakes.replay import ReplayUpstream
from tests.sidecar.harness import Gateway
from tests.sidecar.inbound.anthropic_client import HELLO, anthropic_client
from tests.sidecar.providers.e2e import gateway_for


@dataclass(frozen=True)
class Case:
    kind: str
    model: str
    fake: Callable[[], ReplayUpstream]
    text: str
    suffix: str = ""
    extra: Callable[[], dict[str, Any]] = dict


def _bedrock() -> dict[str, Any]:
    return {"api_key": False, "secrets": {"aws": {"id": ACCESS_KEY_ID,
                                                  "secret": SECRET_ACCESS_KEY}},
            "aws": {"region": "eu-central-1",
                    "accessKeyId": {"secretKeyRef": {"name": "aws", "key": "id"}},
                    "secretAccessKey": {"secretKeyRef": {"name": "aws", "key": "secret"}}}}


CASES = [
    Case("gemini", "gemini-2.0-flash", fake_gemini, "Hello from Gemini", suffix="/v1beta"),
    Case("cohere", "command-a-03-2025", fake_cohere, "Hello from Cohere"),
    Case("azure-openai", "gpt4o-prod", fake_azure, "Hello from Azure",
         extra=lambda: {"azure": {"apiVersion": "2024-10-21"}}),
    Case("bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0", fake_bedrock,
         "Hello from Bedrock", extra=_bedrock),
]


@pytest.fixture(params=CASES, ids=[c.kind for c in CASES])
async def served(request: pytest.FixtureRequest, tmp_path: Path
                 ) -> AsyncIterator[tuple[Case, Gateway]]:
    case: Case = request.param
    upstream = await case.fake().start()
    gw = await gateway_for(tmp_path, case.kind, case.model, baseURL=upstream.url + case.suffix,
                           **case.extra())
    yield case, gw
    await gw.close()
    await upstream.close()


async def test_messages_plain(served: tuple[Case, Gateway]) -> None:
    case, gw = served
    async with anthropic_client(gw) as c:
        message = await c.messages.create(model="chat", max_tokens=64, messages=HELLO)
    assert message.role == "assistant" and message.type == "message"
    assert "".join(b.text for b in message.content if b.type == "text") == case.text
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


async def test_messages_streamed(served: tuple[Case, Gateway]) -> None:
    case, gw = served
    async with anthropic_client(gw) as c, c.messages.stream(
            model="chat", max_tokens=64, messages=HELLO) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == case.text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0
