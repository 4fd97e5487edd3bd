"""`POST /v1/messages/count_tokens` with the official anthropic SDK (`messages.count_tokens`)
against every provider: exact from Anthropic's own endpoint at an anthropic target, from
Bedrock's CountTokens (the Converse input llmgate would send) at a bedrock target and from
Vertex AI's count-tokens endpoint for a Claude model at a vertex-ai target; an upper-bound
estimate elsewhere and wherever the upstream cannot count (said in
`x-llmgate-token-count`), errors in Anthropic's envelope, and no budget reserved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import orjson
from llmgate_sidecar.api.count_tokens import PER_IMAGE, WITH_TOOLS, estimate_tokens

from tests.fakes.anthropic_upstream import fake_anthropic
from tests.fakes.bedrock_upstream import fake_bedrock
from tests.fakes.replay import ReplayUpstream, Reply
from tests.sidecar.harness import Gateway, provider, route, start_gateway, virtual_key
from tests.sidecar.inbound.anthropic_client import HELLO, TOOLS, anthropic_client
from tests.sidecar.inbound.upstreams import (
    AWS_SPEC,
    Upstream,
    served,
    start_vertex,
    vertex_spec,
)
from tests.sidecar.providers.e2e import gateway_for

__all__ = ["served"]  # the fixture, parametrized over every provider kind


# What the fakes count for the request below: Anthropic's recorded answer; Bedrock's rule
# (`bedrock_upstream.count_rule`: 3 + the 4 words of "Be brief." and "Say hello" + 50 for
# the one tool), so the number proves the Converse input arrived whole.
# Claude on Vertex: the Vertex fake's `claude_count_rule`, the same sum.
EXACT = {"anthropic": 14, "bedrock": 3 + 4 + 50, "vertex-ai-claude": 3 + 4 + 50}


async def test_count_tokens_on_every_provider(served: tuple[Upstream, Gateway]) -> None:
    case, gw = served
    async with anthropic_client(gw) as c:
        raw = await c.messages.with_raw_response.count_tokens(
            model="chat", system="Be brief.", messages=HELLO, tools=TOOLS)
    count = await raw.parse()
    if case.id in EXACT:
        assert raw.headers["x-llmgate-token-count"] == "exact"
        assert count.input_tokens == EXACT[case.id]  # what the upstream counted
    else:
        assert raw.headers["x-llmgate-token-count"] == "estimate"
        body = {"system": "Be brief.", "messages": HELLO, "tools": TOOLS}
        assert count.input_tokens == estimate_tokens(body)
        # At least one token per byte of every text, and the tool system prompt.
        assert count.input_tokens >= len("Be brief.Say hello") + WITH_TOOLS
    assert raw.headers["x-llmgate-route"] == "chat"


async def test_anthropic_gets_the_request_for_the_targets_model(tmp_path: Path) -> None:
    upstream = await fake_anthropic().start()
    gw = await start_gateway(tmp_path, [
        provider("claude", "anthropic", baseURL=upstream.url,
                 apiKey={"secretKeyRef": {"name": "cred", "key": "api-key"}}),
        route("chat", [{"provider": "claude", "model": "claude-sonnet-4-5"}]),
        virtual_key("team", secretName="team-key", models=["chat"],
                    budget={"limit": "0.000001", "period": "1d"})], {"cred": {"api-key": "k"}})
    try:
        async with anthropic_client(gw) as c:
            count = await c.messages.count_tokens(model="chat", messages=HELLO, tools=TOOLS)
            assert count.input_tokens == 14  # a budget too small for any message: counting is free
            try:
                await c.messages.count_tokens(model="nope", messages=HELLO)
            except anthropic.NotFoundError as exc:
                body: Any = exc.body
                assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
            else:
                raise AssertionError("an unknown model was counted")
            try:
                await c.messages.count_tokens(model="chat", messages=[])
            except anthropic.BadRequestError as exc:
                assert exc.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
            else:
                raise AssertionError("empty messages were counted")
        sent = upstream.requests[-1]
        assert sent.path == "/v1/messages/count_tokens"
        assert sent.headers["x-api-key"] == "k"
        assert orjson.loads(orjson.dumps(sent.body)) == {
            "model": "claude-sonnet-4-5", "messages": HELLO, "tools": TOOLS}
    finally:
        await gw.close()
        await upstream.close()


def test_the_estimate_counts_images_tools_and_every_byte() -> None:
    text = {"messages": [{"role": "user", "content": "héllo wörld"}]}
    image = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "héllo wörld"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": "iVBORw0KGgo" * 1000}}]}]}
    assert estimate_tokens(text) >= len("héllo wörld".encode())
    assert estimate_tokens(image) == estimate_tokens(text) + PER_IMAGE
    call = {"messages": [{"role": "assistant", "content": [
        {"type": "tool_use", "id": "t1", "name": "f", "input": {"city": "Paris"}}]}]}
    assert estimate_tokens(call) >= len(b'{"city":"Paris"}')


async def _bedrock(tmp_path: Path, model: str) -> tuple[ReplayUpstream, Gateway]:
    fake = await fake_bedrock().start()
    return fake, await gateway_for(tmp_path, "bedrock", model, baseURL=fake.url, **AWS_SPEC)


async def test_bedrock_counts_the_converse_request_it_would_send(tmp_path: Path) -> None:
    fake, gw = await _bedrock(tmp_path, "anthropic.claude-sonnet-4-5-20250929-v1:0")
    thinking = {"type": "enabled", "budget_tokens": 2048}
    try:
        async with anthropic_client(gw) as c:
            raw = await c.messages.with_raw_response.count_tokens(
                model="chat", system="Be brief.", messages=HELLO, tools=TOOLS,
                thinking=thinking)  # type: ignore[arg-type]
        assert raw.headers["x-llmgate-token-count"] == "exact"
        assert (await raw.parse()).input_tokens == 3 + 4 + 50
        sent = fake.requests[-1]  # signed as every Bedrock call (the fake checks SigV4)
        assert sent.path == "/model/anthropic.claude-sonnet-4-5-20250929-v1:0/count-tokens"
        assert sent.body == {"input": {"converse": {
            "messages": [{"role": "user", "content": [{"text": "Say hello"}]}],
            "system": [{"text": "Be brief."}],
            "toolConfig": {"tools": [{"toolSpec": {
                "name": "get_weather", "description": "Current weather for a city",
                "inputSchema": {"json": TOOLS[0]["input_schema"]}}}]},
            "additionalModelRequestFields": {"thinking": thinking}}}}
    finally:
        await gw.close()
        await fake.close()


async def test_bedrock_falls_back_to_the_estimate_where_it_cannot_count(
        tmp_path: Path) -> None:
    """Models without token counting (Bedrock's ValidationException) and requests llmgate
    cannot send to Bedrock (a document block) get the estimate; an answer without
    inputTokens is a 502, never a made-up count."""
    fake, gw = await _bedrock(tmp_path, "amazon.nova-pro-v1:0")
    document = [{"role": "user", "content": [
        {"type": "text", "text": "Summarise"},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                        "data": "some text"}}]}]
    try:
        async with anthropic_client(gw) as c:
            raw = await c.messages.with_raw_response.count_tokens(model="chat", messages=HELLO)
            assert raw.headers["x-llmgate-token-count"] == "estimate"
            assert (await raw.parse()).input_tokens == estimate_tokens({"messages": HELLO})
            assert fake.requests[-1].path.endswith("/count-tokens")  # asked, refused
            raw = await c.messages.with_raw_response.count_tokens(
                model="chat", messages=document)  # type: ignore[arg-type]
            assert raw.headers["x-llmgate-token-count"] == "estimate"
            assert (await raw.parse()).input_tokens == estimate_tokens({"messages": document})
            fake.script.append(Reply(raw=b'{"tokens": 12}'))
            try:
                await c.messages.count_tokens(model="chat", messages=HELLO)
            except anthropic.APIStatusError as exc:
                assert exc.status_code == 502
            else:
                raise AssertionError("an answer without inputTokens was counted")
    finally:
        await gw.close()
        await fake.close()


async def test_vertex_counts_claude_at_anthropics_count_tokens_endpoint(
        tmp_path: Path) -> None:
    fake = await start_vertex()
    gw = await gateway_for(tmp_path, "vertex-ai", "claude-sonnet-4-5@20250929",
                           baseURL=fake.url + "/v1", api_key=False, **vertex_spec(fake))
    try:
        async with anthropic_client(gw) as c:
            raw = await c.messages.with_raw_response.count_tokens(
                model="chat", system="Be brief.", messages=HELLO, tools=TOOLS)
            assert raw.headers["x-llmgate-token-count"] == "exact"
            assert (await raw.parse()).input_tokens == 3 + 4 + 50  # the fake's rule
            sent = fake.requests[-1]
            assert sent.path == ("/v1/projects/acme/locations/europe-west4/publishers/"
                                 "anthropic/models/count-tokens:rawPredict")
            assert sent.headers["Authorization"].startswith("Bearer ya29.fake-")
            assert sent.body == {"model": "claude-sonnet-4-5@20250929", "system": "Be brief.",
                                 "messages": HELLO, "tools": TOOLS}
            # A Region or model without counting: Vertex's 400, answered by the estimate.
            fake.script.append(Reply(raw=b'{"error": {"code": 400, "status": '
                                         b'"INVALID_ARGUMENT", "message": "no"}}', status=400))
            raw = await c.messages.with_raw_response.count_tokens(model="chat", messages=HELLO)
            assert raw.headers["x-llmgate-token-count"] == "estimate"
            assert (await raw.parse()).input_tokens == estimate_tokens({"messages": HELLO})
    finally:
        await gw.close()
        await fake.close()
