"""Prompt-cache usage end to end: Anthropic, Claude on Vertex AI and Bedrock answers that
wrote to or read from the provider's prompt cache (buffered and streamed; in a stream the counts in
`message_start` and/or the final `message_delta`; 1-hour writes from Anthropic's
`cache_creation` and Bedrock's `cacheDetails`) reach the OpenAI SDK as
`prompt_tokens_details.cached_tokens` / `cache_write_tokens`, the Anthropic SDK as
Anthropic's own usage (`input_tokens` without cache writes or reads), the token metrics,
and the key's budget at the provider's prices (writes above the input price, reads far
below)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from llmgate_contract.budget import micros_to_usd, usd_to_micros

from tests.fakes.anthropic_upstream import fake_anthropic
from tests.fakes.bedrock_upstream import (
    ACCESS_KEY_ID,
    SECRET_ACCESS_KEY,
    fake_bedrock,
    stream_reply,
)
from tests.fakes.replay import ReplayUpstream, Reply
from tests.sidecar.harness import Gateway, provider, route, start_gateway, virtual_key
from tests.sidecar.inbound.anthropic_client import HELLO, anthropic_client
from tests.sidecar.inbound.upstreams import start_vertex, vertex_spec
from tests.sidecar.providers.e2e import PROVIDER_KEY, client
from tests.sidecar.test_metrics import scrape, value

# claude-sonnet-4-5 (and Bedrock's claude-3-5-sonnet), USD per million: input 3, cache write
# 3.75 (5-minute cache) or 6 (1-hour), cache read 0.30, output 15. 21 fresh input tokens,
# 1,834 cached.
WRITE_COST = Decimal("0.0071205")  # 21 x 3 + 1834 x 3.75 + 12 x 15
READ_COST = Decimal("0.0007482")   # 21 x 3 + 1834 x 0.30 + 9 x 15
WRITE_1H_COST = Decimal("0.011247")  # 21 x 3 + 1834 x 6 (the 1-hour cache) + 12 x 15
# Bedrock's cacheDetails split 1,834 writes: 1,000 to the 1-hour cache, 834 to the 5-minute.
SPLIT_COST = Decimal("0.0093705")  # 21 x 3 + 1000 x 6 + 834 x 3.75 + 12 x 15
SPLIT_STREAMED_COST = Decimal("0.0093255")  # the same with 9 output tokens


def booked(usd: Decimal) -> Decimal:
    """What the budget store keeps of a cost: whole micro-dollars, rounded half up."""
    return micros_to_usd(usd_to_micros(usd))


@dataclass(frozen=True)
class Case:
    reply: Reply
    stream: bool
    written: int
    read: int
    output: int
    cost: Decimal


ANTHROPIC = {
    "write": Case(Reply("response_cache_write.json"), False, 1834, 0, 12, WRITE_COST),
    "read": Case(Reply("response_cache_read.json"), False, 0, 1834, 9, READ_COST),
    "write-1h": Case(Reply("response_cache_write_1h.json"), False, 1834, 0, 12, WRITE_1H_COST),
    "write-streamed": Case(Reply("stream_cache_write.sse"), True, 1834, 0, 12, WRITE_COST),
    # message_start says 0 input tokens; only the final message_delta has the counts.
    "read-streamed-final-delta": Case(Reply("stream_cache_read_final_delta.sse"), True, 0,
                                      1834, 9, READ_COST),
}
BEDROCK = {
    "write": Case(Reply("response_cache_write.json"), False, 1834, 0, 12, WRITE_COST),
    "read": Case(Reply("response_cache_read.json"), False, 0, 1834, 9, READ_COST),
    "read-streamed": Case(stream_reply("stream_cache_read.eventstream"), True, 0, 1834, 9,
                          READ_COST),
    "write-1h-split": Case(Reply("response_cache_write_1h.json"), False, 1834, 0, 12,
                           SPLIT_COST),
    "write-1h-split-streamed": Case(stream_reply("stream_cache_write_1h.eventstream"), True,
                                    1834, 0, 9, SPLIT_STREAMED_COST),
}


async def budgeted_gateway(tmp_path: Path, kind: str, model: str,
                           secrets: dict[str, dict[str, str]], **spec: Any) -> Gateway:
    return await start_gateway(tmp_path, [
        provider("up", kind, **spec),
        route("chat", [{"provider": "up", "model": model}]),
        virtual_key("team", secretName="team-key", budget={"limit": "100.00", "period": "1d"}),
    ], secrets)


MODELS = {"anthropic": "claude-sonnet-4-5-20250929",
          "bedrock": "anthropic.claude-3-5-sonnet-20240620-v1:0",
          "vertex-ai": "claude-sonnet-4-5@20250929"}
# Claude on Vertex AI answers with Anthropic's own Messages bodies and streams.
CASES = {"anthropic": ANTHROPIC, "bedrock": BEDROCK, "vertex-ai": ANTHROPIC}
PAIRS = [(kind, name) for kind, named in CASES.items() for name in named]


def kind_of(upstream: ReplayUpstream) -> str:
    return "vertex-ai" if "/publishers/anthropic/" in upstream.paths[-1] else upstream.provider


@pytest.fixture
async def upstream(request: pytest.FixtureRequest) -> AsyncIterator[ReplayUpstream]:
    if request.param == "vertex-ai":
        fake = await start_vertex(scripted="anthropic")
    else:
        fake = await (fake_anthropic() if request.param == "anthropic"
                      else fake_bedrock()).start()
    yield fake
    await fake.close()


@pytest.fixture
async def gateway(tmp_path: Path, upstream: ReplayUpstream) -> AsyncIterator[Gateway]:
    if kind_of(upstream) == "vertex-ai":
        spec = vertex_spec(upstream)
        gw = await budgeted_gateway(tmp_path, "vertex-ai", MODELS["vertex-ai"],
                                    spec.pop("secrets"), baseURL=upstream.url + "/v1", **spec)
    elif upstream.provider == "anthropic":
        gw = await budgeted_gateway(
            tmp_path, "anthropic", MODELS["anthropic"],
            {"up-cred": {"api-key": PROVIDER_KEY}}, baseURL=upstream.url,
            apiKey={"secretKeyRef": {"name": "up-cred", "key": "api-key"}})
    else:
        gw = await budgeted_gateway(
            tmp_path, "bedrock", MODELS["bedrock"],
            {"aws": {"id": ACCESS_KEY_ID, "secret": SECRET_ACCESS_KEY}}, baseURL=upstream.url,
            aws={"region": "eu-central-1",
                 "accessKeyId": {"secretKeyRef": {"name": "aws", "key": "id"}},
                 "secretAccessKey": {"secretKeyRef": {"name": "aws", "key": "secret"}}})
    yield gw
    await gw.close()


async def chat_usage(gw: Gateway, case: Case) -> tuple[int, int, int, int]:
    """(input without cache, cache writes, cache reads, output) as the OpenAI SDK sees them."""
    async with client(gw) as c:
        if case.stream:
            stream = await c.chat.completions.create(
                model="chat", messages=HELLO, stream=True,
                stream_options={"include_usage": True})
            usage = [chunk async for chunk in stream][-1].usage
        else:
            usage = (await c.chat.completions.create(model="chat", messages=HELLO)).usage
    assert usage is not None and usage.prompt_tokens_details is not None
    details = usage.prompt_tokens_details
    # The openai SDK has the field too (`PromptTokensDetails.cache_write_tokens`).
    written, read = details.cache_write_tokens or 0, details.cached_tokens or 0
    return usage.prompt_tokens - written - read, written, read, usage.completion_tokens


async def messages_usage(gw: Gateway, case: Case) -> tuple[int, int, int, int]:
    """The same, as the Anthropic SDK sees them (a stream: its accumulated final message)."""
    async with anthropic_client(gw) as c:
        if case.stream:
            async with c.messages.stream(model="chat", max_tokens=100,
                                         messages=HELLO) as stream:
                usage = (await stream.get_final_message()).usage
        else:
            usage = (await c.messages.create(model="chat", max_tokens=100,
                                             messages=HELLO)).usage
    return (usage.input_tokens, usage.cache_creation_input_tokens or 0,
            usage.cache_read_input_tokens or 0, usage.output_tokens)


@pytest.mark.parametrize("api", ["chat", "messages"])
@pytest.mark.parametrize(("upstream", "name"), PAIRS, indirect=["upstream"])
async def test_cache_tokens_reach_both_apis_the_metrics_and_the_budget(
        gateway: Gateway, upstream: ReplayUpstream, name: str, api: str) -> None:
    case = CASES[kind_of(upstream)][name]
    upstream.script.append(case.reply)
    ask = chat_usage if api == "chat" else messages_usage
    assert await ask(gateway, case) == (21, case.written, case.read, case.output)
    assert await gateway.settled() == (booked(case.cost), Decimal(0))
    samples = await scrape(gateway)
    labels = {"route": "chat", "provider": "up", "model": MODELS[kind_of(upstream)],
              "virtual_key": "team"}
    tokens = {d: value(samples, "llmgate_tokens_total", **labels, direction=d)
              for d in ("input", "cache_read", "cache_write")}
    assert tokens == {"input": 21 + case.written + case.read, "cache_read": case.read,
                      "cache_write": case.written}
