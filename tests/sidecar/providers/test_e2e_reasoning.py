"""Reasoning end to end through the real sidecar, with the official SDKs as clients.

Chat: every reasoning-capable provider's thinking reaches the OpenAI SDK as
`reasoning_content` (buffered and streamed), with Anthropic's and Bedrock's signed blocks
as `thinking_blocks`; `reasoning_effort` / `thinking` become each provider's own request
field. Messages: a multi-turn tool-use conversation with thinking enabled round-trips
through `/v1/messages` to Anthropic, to Claude on Vertex AI and to Bedrock with the
signatures byte for byte, and the signed blocks are accepted back in the next request's
history.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from tests.fakes.anthropic_upstream import fake_anthropic
from tests.fakes.bedrock_upstream import (
    ACCESS_KEY_ID,
    SECRET_ACCESS_KEY,
    fake_bedrock,
    stream_reply,
)
from tests.fakes.cohere_upstream import fake_cohere
from tests.fakes.gemini_upstream import TokenEndpoint, fake_gemini, fake_vertex
from tests.fakes.replay import ReplayUpstream, Reply, transcript_json
from tests.sidecar.harness import Gateway
from tests.sidecar.inbound.anthropic_client import TOOLS, anthropic_client
from tests.sidecar.inbound.upstreams import start_vertex, vertex_spec
from tests.sidecar.providers.e2e import MESSAGES, client, gateway_for
from tests.sidecar.providers.gcp_key import service_account_key

THOUGHT = "The user wants the weather in Paris. I should call get_weather with city Paris."
SIGNATURES = {
    "anthropic": transcript_json("anthropic", "response_thinking_tool_use.json")[
        "content"][0]["signature"],
    "bedrock": transcript_json("bedrock", "response_reasoning_tool_use.json")[
        "output"]["message"]["content"][0]["reasoningContent"]["reasoningText"]["signature"],
}
SIGNATURES["vertex-claude"] = SIGNATURES["anthropic"]  # Claude on Vertex: Anthropic's bodies
# Kinds whose upstream speaks Anthropic's Messages API.
MESSAGES_API = ("anthropic", "vertex-claude")
AWS = {"region": "eu-central-1",
       "accessKeyId": {"secretKeyRef": {"name": "aws", "key": "id"}},
       "secretAccessKey": {"secretKeyRef": {"name": "aws", "key": "secret"}}}


async def start(kind: str, tmp_path: Path) -> tuple[Gateway, ReplayUpstream]:
    """The gateway in front of a fake `kind` upstream (route `chat`)."""
    if kind == "anthropic":
        fake = await fake_anthropic().start()
        return await gateway_for(tmp_path, kind, "claude-sonnet-4-5", baseURL=fake.url), fake
    if kind == "bedrock":
        fake = await fake_bedrock().start()
        return await gateway_for(
            tmp_path, kind, "us.anthropic.claude-sonnet-4-5-20250929-v1:0", api_key=False,
            baseURL=fake.url, aws=AWS,
            secrets={"aws": {"id": ACCESS_KEY_ID, "secret": SECRET_ACCESS_KEY}}), fake
    if kind == "gemini":
        fake = await fake_gemini().start()
        return await gateway_for(tmp_path, kind, "gemini-2.5-flash",
                                 baseURL=fake.url + "/v1beta"), fake
    if kind == "vertex-claude":
        fake = await start_vertex(scripted="anthropic")
        return await gateway_for(tmp_path, "vertex-ai", "claude-sonnet-4-5@20250929",
                                 api_key=False, baseURL=fake.url + "/v1",
                                 **vertex_spec(fake)), fake
    if kind == "vertex-ai":
        tokens = TokenEndpoint("")
        fake = await fake_vertex(tokens).start()
        key, tokens.public_key_pem = service_account_key(fake.url + "/token")
        return await gateway_for(
            tmp_path, kind, "gemini-2.5-flash", api_key=False, baseURL=fake.url + "/v1",
            gcp={"project": "acme", "location": "europe-west4",
                 "serviceAccountKey": {"secretKeyRef": {"name": "gcp", "key": "sa.json"}}},
            secrets={"gcp": {"sa.json": key}}), fake
    if kind == "cohere":
        fake = await fake_cohere().start()
        return await gateway_for(tmp_path, kind, "command-a-reasoning-08-2025",
                                 baseURL=fake.url), fake
    fake = await ReplayUpstream("openai", ["/v1/chat/completions"],
                                lambda request, body: Reply("response_reasoning.json")).start()
    return await gateway_for(tmp_path, "deepseek", "deepseek-reasoner",
                             baseURL=fake.url + "/v1"), fake


Rig = Callable[[str], Awaitable[tuple[Gateway, ReplayUpstream]]]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    started: list[tuple[Gateway, ReplayUpstream]] = []

    async def make(kind: str) -> tuple[Gateway, ReplayUpstream]:
        started.append(await start(kind, tmp_path))
        return started[-1]

    yield make
    for gw, fake in started:
        await gw.close()
        await fake.close()


# provider kind -> (buffered reply, streamed reply, the reasoning text both carry)
REASONING = {
    "anthropic": (Reply("response_thinking_tool_use.json"),
                  Reply("stream_thinking_tool_use.sse"), THOUGHT),
    "vertex-claude": (Reply("response_thinking_tool_use.json"),
                      Reply("stream_thinking_tool_use.sse"), THOUGHT),
    "bedrock": (Reply("response_reasoning_tool_use.json"),
                stream_reply("stream_reasoning_tool_use.eventstream"), THOUGHT),
    "gemini": (Reply("response_thought.json"), Reply("stream_thought.sse"),
               "**Greeting the user**\n\nA short, friendly hello is all that is needed."),
    "vertex-ai": (Reply("response_thought.json"), Reply("stream_thought.sse"),
                  "**Greeting the user**\n\nA short, friendly hello is all that is needed."),
    "cohere": (Reply("response_thinking.json"), Reply("stream_thinking.sse"),
               "A greeting was requested; answer briefly."),
    "deepseek": (Reply("response_reasoning.json"), Reply("stream_reasoning.sse"),
                 "A greeting was requested; answer briefly."),
}


@pytest.mark.parametrize("kind", list(REASONING))
async def test_reasoning_content_on_chat_buffered_and_streamed(rig: Rig, kind: str) -> None:
    gw, upstream = await rig(kind)
    buffered, streamed, thought = REASONING[kind]
    upstream.script.extend([buffered, streamed])
    async with client(gw) as c:
        result = await c.chat.completions.create(model="chat", messages=MESSAGES)
        stream = await c.chat.completions.create(model="chat", messages=MESSAGES, stream=True)
        deltas = [chunk.choices[0].delta async for chunk in stream if chunk.choices]
    message = result.choices[0].message
    assert getattr(message, "reasoning_content", None) == thought
    assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == thought
    signature = SIGNATURES.get(kind)
    blocks = getattr(message, "thinking_blocks", None)
    if signature is None:  # unsigned reasoning: nothing to send back
        assert blocks is None
        return
    assert blocks == [{"type": "thinking", "thinking": thought, "signature": signature}]
    ends = [b for d in deltas for b in getattr(d, "thinking_blocks", None) or []]
    assert ends == [{"type": "thinking", "thinking": "", "signature": signature}]


@pytest.mark.parametrize("kind", ["anthropic", "vertex-claude", "bedrock"])
async def test_chat_history_sends_signed_thinking_back(rig: Rig, kind: str) -> None:
    """The assistant turn the OpenAI SDK returned (thinking_blocks included) goes back in
    the next request; the upstream gets its own signed thinking first in that turn."""
    gw, upstream = await rig(kind)
    upstream.script.append(REASONING[kind][0])
    async with client(gw) as c:
        first = await c.chat.completions.create(model="chat", messages=MESSAGES, tools=TOOLS_OAI,
                                                reasoning_effort="low", max_tokens=4096)
        turn = first.choices[0].message.model_dump(exclude_none=True)
        call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
        await c.chat.completions.create(model="chat", tools=TOOLS_OAI, messages=[
            *MESSAGES, turn, {"role": "tool", "tool_call_id": call.id, "content": "18C"}])
    sent = [r.body for r in upstream.requests]
    signature = SIGNATURES[kind]
    if kind in MESSAGES_API:
        assert sent[0]["thinking"] == {"type": "enabled", "budget_tokens": 2048}
        assert sent[1]["messages"][1]["content"][0] == {
            "type": "thinking", "thinking": THOUGHT, "signature": signature}
        assert sent[1]["messages"][1]["content"][1]["type"] == "tool_use"
    else:
        assert sent[0]["additionalModelRequestFields"] == {
            "thinking": {"type": "enabled", "budget_tokens": 2048}}
        assert sent[1]["messages"][1]["content"][0] == {"reasoningContent": {
            "reasoningText": {"text": THOUGHT, "signature": signature}}}
        assert "toolUse" in sent[1]["messages"][1]["content"][1]


TOOLS_OAI: list[Any] = [{"type": "function", "function": {
    "name": t["name"], "description": t["description"], "parameters": t["input_schema"]}}
    for t in TOOLS]


@pytest.mark.parametrize(("kind", "field"), [
    ("anthropic", lambda body: body["thinking"]),
    ("vertex-claude", lambda body: body["thinking"]),
    ("bedrock", lambda body: body["additionalModelRequestFields"]["thinking"]),
    ("gemini", lambda body: body["generationConfig"]["thinkingConfig"]),
    ("cohere", lambda body: body["thinking"]),
    ("deepseek", lambda body: body["reasoning_effort"]),
])
async def test_reasoning_effort_becomes_each_providers_own_field(
        rig: Rig, kind: str, field: Callable[[dict[str, Any]], Any]) -> None:
    gw, upstream = await rig(kind)
    async with client(gw) as c:
        await c.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=20000,
                                        reasoning_effort="medium")
        await c.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=20000,
                                        extra_body={"thinking": {"type": "enabled",
                                                                 "budget_tokens": 3000}})
    asked = [field(r.body) for r in upstream.requests]
    expected = {
        "anthropic": [{"type": "enabled", "budget_tokens": 8192},
                      {"type": "enabled", "budget_tokens": 3000}],
        "vertex-claude": [{"type": "enabled", "budget_tokens": 8192},
                          {"type": "enabled", "budget_tokens": 3000}],
        "bedrock": [{"type": "enabled", "budget_tokens": 8192},
                    {"type": "enabled", "budget_tokens": 3000}],
        "gemini": [{"thinkingBudget": 8192, "includeThoughts": True},
                   {"thinkingBudget": 3000, "includeThoughts": True}],
        "cohere": [{"type": "enabled", "token_budget": 8192},
                   {"type": "enabled", "token_budget": 3000}],
        # Anthropic's object means nothing to an OpenAI-family upstream: its nearest effort.
        "deepseek": ["medium", "low"],
    }[kind]
    assert asked == expected
    if kind == "deepseek":
        assert "thinking" not in upstream.requests[1].body


async def test_reasoning_effort_that_cannot_fit_under_max_tokens_is_a_400(rig: Rig) -> None:
    gw, upstream = await rig("anthropic")
    async with client(gw) as c:
        with pytest.raises(openai.BadRequestError) as info:
            await c.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=1000,
                                            reasoning_effort="high")
    assert (info.value.code, info.value.param) == ("invalid_value", "max_tokens")
    assert upstream.requests == []


@pytest.mark.parametrize("kind", ["anthropic", "vertex-claude", "bedrock"])
@pytest.mark.parametrize("streamed", [False, True])
async def test_messages_tool_use_with_thinking_round_trips(rig: Rig, kind: str,
                                                           streamed: bool) -> None:
    """Turn 1 asks with thinking and tools; the answer's thinking block and signature reach
    the Anthropic SDK exactly; turn 2 sends them back with the tool result, and the upstream
    receives them first in the assistant turn, signature intact."""
    gw, upstream = await rig(kind)
    buffered, stream, _ = REASONING[kind]
    final = Reply("response_thinking_final.json" if kind in MESSAGES_API
                  else "response_text.json")
    upstream.script.extend([stream if streamed else buffered, final])
    thinking = {"type": "enabled", "budget_tokens": 2048}
    question: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    async with anthropic_client(gw) as c:
        if streamed:
            async with c.messages.stream(model="chat", max_tokens=4096, thinking=thinking,
                                         tools=TOOLS, messages=question) as s:
                first = await s.get_final_message()
        else:
            first = await c.messages.create(model="chat", max_tokens=4096, thinking=thinking,
                                            tools=TOOLS, messages=question)
        block, use = first.content[0], first.content[1]
        assert block.type == "thinking" and use.type == "tool_use"
        assert (block.thinking, block.signature) == (THOUGHT, SIGNATURES[kind])
        assert first.stop_reason == "tool_use" and use.input == {"city": "Paris"}
        second = await c.messages.create(model="chat", max_tokens=4096, thinking=thinking,
                                         tools=TOOLS, messages=[
            *question, {"role": "assistant", "content": first.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                          "content": "18C and sunny"}]}])
    assert second.content[-1].type == "text"
    sent = upstream.requests[1].body
    if kind in MESSAGES_API:
        assert sent["thinking"] == thinking
        assert sent["messages"][1]["content"][0] == {
            "type": "thinking", "thinking": THOUGHT, "signature": SIGNATURES[kind]}
        assert sent["messages"][1]["content"][1]["id"] == use.id
        assert sent["messages"][2]["content"][0]["tool_use_id"] == use.id
    else:
        assert sent["additionalModelRequestFields"] == {"thinking": thinking}
        assert sent["messages"][1]["content"][0] == {"reasoningContent": {
            "reasoningText": {"text": THOUGHT, "signature": SIGNATURES[kind]}}}
        assert sent["messages"][1]["content"][1]["toolUse"]["toolUseId"] == use.id


async def test_messages_redacted_thinking_comes_back_and_goes_back(rig: Rig) -> None:
    gw, upstream = await rig("anthropic")
    upstream.script.extend([Reply("response_redacted_thinking.json"),
                            Reply("response_text.json")])
    raw = transcript_json("anthropic", "response_redacted_thinking.json")["content"]
    question: list[Any] = [{"role": "user", "content": "Hi"}]
    async with anthropic_client(gw) as c:
        first = await c.messages.create(model="chat", max_tokens=4096, messages=question,
                                        thinking={"type": "enabled", "budget_tokens": 2048})
        assert [b.model_dump() for b in first.content] == [
            {**raw[0]}, {**raw[1]}, {**raw[2], "citations": None}]
        await c.messages.create(model="chat", max_tokens=4096, messages=[
            *question, {"role": "assistant", "content": first.content},
            {"role": "user", "content": "Thanks"}])
    assert upstream.requests[1].body["messages"][1]["content"][:2] == raw[:2]


async def test_messages_stream_events_carry_thinking_and_signature_deltas(rig: Rig) -> None:
    """The raw Messages events, as Anthropic's own stream has them."""
    gw, upstream = await rig("anthropic")
    upstream.script.append(Reply("stream_thinking_tool_use.sse"))
    async with anthropic_client(gw) as c:
        stream = await c.messages.create(model="chat", max_tokens=4096, stream=True,
                                         thinking={"type": "enabled", "budget_tokens": 2048},
                                         tools=TOOLS, messages=MESSAGES)
        events = [orjson.loads(e.model_dump_json()) async for e in stream]
    kinds = [(e["type"], (e.get("delta") or e.get("content_block") or {}).get("type"))
             for e in events if e["type"].startswith("content_block")]
    assert kinds == [
        ("content_block_start", "thinking"), ("content_block_delta", "thinking_delta"),
        ("content_block_delta", "thinking_delta"), ("content_block_delta", "signature_delta"),
        ("content_block_stop", None), ("content_block_start", "tool_use"),
        ("content_block_delta", "input_json_delta"), ("content_block_stop", None)]


GEMINI_SIGNATURE = transcript_json("gemini", "response_function_call_signed.json")[
    "candidates"][0]["content"]["parts"][1]["thoughtSignature"]


@pytest.mark.parametrize("kind", ["gemini", "vertex-ai"])
async def test_gemini_thought_signatures_ride_on_tool_calls_and_go_back(rig: Rig,
                                                                         kind: str) -> None:
    """A signed function call comes back as Google's own OpenAI compatibility shows it
    (`extra_content.google.thought_signature` on the tool call), buffered and streamed, and
    the tool call sent back in history reaches Gemini with its `thoughtSignature`."""
    gw, upstream = await rig(kind)
    upstream.script.extend([Reply("response_function_call_signed.json"),
                            Reply("stream_function_call_signed.sse")])
    signed = {"google": {"thought_signature": GEMINI_SIGNATURE}}
    async with client(gw) as c:
        first = await c.chat.completions.create(model="chat", messages=MESSAGES,
                                                tools=TOOLS_OAI, reasoning_effort="low")
        stream = await c.chat.completions.create(model="chat", messages=MESSAGES,
                                                 tools=TOOLS_OAI, stream=True)
        calls = [call for chunk in [ch async for ch in stream] if chunk.choices
                 for call in chunk.choices[0].delta.tool_calls or []]
        turn = first.choices[0].message.model_dump(exclude_none=True)
        await c.chat.completions.create(model="chat", tools=TOOLS_OAI, messages=[
            *MESSAGES, turn, {"role": "tool", "tool_call_id": turn["tool_calls"][0]["id"],
                              "content": "18C"}])
    assert turn["tool_calls"][0]["extra_content"] == signed
    assert getattr(first.choices[0].message, "reasoning_content", None) == \
        "I will look the weather up."
    assert [getattr(call, "extra_content", None) for call in calls] == [signed]
    sent = upstream.requests[2].body["contents"][1]["parts"]
    assert sent == [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                     "thoughtSignature": GEMINI_SIGNATURE}]
    assert upstream.requests[0].body["generationConfig"]["thinkingConfig"] == {
        "thinkingBudget": 2048, "includeThoughts": True}


TEXT_SIGNATURE = transcript_json("gemini", "response_text_signed.json")[
    "candidates"][0]["content"]["parts"][0]["thoughtSignature"]


@pytest.mark.parametrize("kind", ["gemini", "vertex-ai"])
async def test_gemini_thought_signatures_on_text_come_back_and_go_back(rig: Rig,
                                                                       kind: str) -> None:
    """Gemini 3 signs an answer's text part: the signature reaches the openai SDK as the
    message's `extra_content.google.thought_signature` (buffered) and on the stream delta
    that carried it (the empty last part), and the assistant turn sent back in history
    reaches Gemini as a text part with its `thoughtSignature` (an empty text part when the
    turn had none)."""
    gw, upstream = await rig(kind)
    upstream.script.extend([Reply("response_text_signed.json"),
                            Reply("stream_text_signed.sse")])
    signed = {"google": {"thought_signature": TEXT_SIGNATURE}}
    async with client(gw) as c:
        first = await c.chat.completions.create(model="chat", messages=MESSAGES)
        stream = await c.chat.completions.create(model="chat", messages=MESSAGES,
                                                 stream=True)
        deltas = [chunk.choices[0].delta async for chunk in stream if chunk.choices]
        turn = first.choices[0].message.model_dump(exclude_none=True)
        await c.chat.completions.create(model="chat", messages=[
            *MESSAGES, turn, {"role": "user", "content": "And again?"},
            {"role": "assistant", "content": "", "extra_content": signed},  # type: ignore[list-item]
            {"role": "user", "content": "Once more"}])
    assert turn["content"] == "Hello from Gemini" and turn["extra_content"] == signed
    assert "".join(d.content or "" for d in deltas) == "Hello from Gemini"
    assert [getattr(d, "extra_content", None) for d in deltas] == [None, None, signed]
    contents = upstream.requests[2].body["contents"]
    assert contents[1] == {"role": "model", "parts": [
        {"text": "Hello from Gemini", "thoughtSignature": TEXT_SIGNATURE}]}
    assert contents[3] == {"role": "model", "parts": [
        {"text": "", "thoughtSignature": TEXT_SIGNATURE}]}


@pytest.mark.parametrize("reply", [Reply("response_reasoning.json"),
                                   Reply("stream_reasoning.sse"),
                                   Reply("response_reasoning_field.json")])
async def test_messages_api_shows_openai_family_reasoning_as_unsigned_thinking(
        rig: Rig, reply: Reply) -> None:
    """DeepSeek's `reasoning_content` (and Groq's / OpenRouter's `reasoning`) reach the
    Anthropic SDK as a thinking block with an empty signature, before the text."""
    gw, upstream = await rig("deepseek")
    upstream.script.append(reply)
    async with anthropic_client(gw) as c:
        if reply.file.endswith(".sse"):
            async with c.messages.stream(model="chat", max_tokens=100,
                                         messages=MESSAGES) as s:
                answer = await s.get_final_message()
        else:
            answer = await c.messages.create(model="chat", max_tokens=100, messages=MESSAGES)
    thinking, text = answer.content
    assert thinking.type == "thinking" and text.type == "text"
    assert (thinking.thinking, thinking.signature) == (
        "A greeting was requested; answer briefly.", "")
