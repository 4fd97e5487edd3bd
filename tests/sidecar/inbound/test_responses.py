"""`POST /v1/responses` translated for every provider, with the official openai SDK
(`responses.create`, `responses.stream`): text, usage, function tools plain and streamed,
multi-turn input with tool results (no previous_response_id), JSON output formats, and the
gateway's budgets, cache and metrics as for chat. OpenAI's own /v1/responses behind an
`openai` target is covered by test_passthrough.py; requests that need it are refused
elsewhere with a 400 naming the parameter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from llmgate_sidecar.api.responses_inbound import parse_responses
from llmgate_sidecar.errors import BadRequest

from tests.fakes.anthropic_upstream import fake_anthropic
from tests.fakes.openai_upstream import Behaviour, FakeOpenAI
from tests.sidecar.harness import Gateway, provider, route, start_gateway, virtual_key
from tests.sidecar.inbound.upstreams import Upstream, served, sse_events
from tests.sidecar.providers.e2e import client, gateway_for

__all__ = ["served"]  # the fixture, parametrized over every provider kind

TOOLS: list[Any] = [{"type": "function", "name": "get_weather",
                     "description": "Current weather for a city",
                     "parameters": {"type": "object",
                                    "properties": {"city": {"type": "string"}},
                                    "required": ["city"]}}]


async def test_create_answers_text_and_usage(served: tuple[Upstream, Gateway]) -> None:
    case, gw = served
    async with client(gw) as c:
        raw = await c.responses.with_raw_response.create(
            model="chat", instructions="Be brief.", input="Say hello", max_output_tokens=64)
    result = raw.parse()
    assert result.object == "response" and result.status == "completed"
    assert result.id.startswith("resp_")
    assert result.output_text == case.text
    assert result.usage is not None and result.usage.input_tokens > 0
    assert result.usage.total_tokens == result.usage.input_tokens + result.usage.output_tokens
    assert raw.headers["x-llmgate-route"] == "chat"


async def test_function_tools_plain_and_streamed(served: tuple[Upstream, Gateway]) -> None:
    case, gw = served
    async with client(gw) as c:
        result = await c.responses.create(model="chat", input="Weather in Paris?",
                                          tools=TOOLS, tool_choice="required")
        async with c.responses.stream(model="chat", input="Weather in Paris?", tools=TOOLS,
                                      tool_choice="required") as stream:
            events = [event async for event in stream]
            final = await stream.get_final_response()
    for response in (result, final):
        calls = [item for item in response.output if item.type == "function_call"]
        assert len(calls) == 1 and calls[0].name == "get_weather"
        assert orjson.loads(calls[0].arguments) == case.arguments
        assert calls[0].call_id
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert orjson.loads(done[0].arguments) == case.arguments


async def test_multi_turn_input_with_a_tool_result_reaches_the_upstream(
        tmp_path: Path) -> None:
    """Without previous_response_id the client sends the whole conversation: its earlier
    function_call and the function_call_output become Anthropic tool_use / tool_result."""
    upstream = await fake_anthropic().start()
    gw = await gateway_for(tmp_path, "anthropic", "claude-sonnet-4-5", baseURL=upstream.url)
    try:
        async with client(gw) as c:
            result = await c.responses.create(model="chat", tools=TOOLS, input=[
                {"role": "user", "content": "Weather in Paris?"},
                {"type": "function_call", "call_id": "toolu_1", "name": "get_weather",
                 "arguments": '{"city": "Paris"}'},
                {"type": "function_call_output", "call_id": "toolu_1", "output": "18C, sunny"},
                {"role": "user", "content": [{"type": "input_text", "text": "And now?"}]}])
        assert result.status == "completed"
        sent = upstream.requests[-1].body
        assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user", "user"] \
            or [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
        blocks = [b for m in sent["messages"] if isinstance(m["content"], list)
                  for b in m["content"]]
        assert {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                "input": {"city": "Paris"}} in blocks
        assert any(b["type"] == "tool_result" and b["tool_use_id"] == "toolu_1"
                   for b in blocks)
    finally:
        await gw.close()
        await upstream.close()


async def test_requests_only_openai_can_serve_are_refused_naming_the_parameter(
        tmp_path: Path) -> None:
    upstream = await fake_anthropic().start()
    gw = await gateway_for(tmp_path, "anthropic", "claude-sonnet-4-5", baseURL=upstream.url)
    try:
        async with client(gw) as c:
            for params in ({"previous_response_id": "resp_1"},
                           {"tools": [{"type": "web_search"}]}):
                with pytest.raises(openai.BadRequestError) as info:
                    await c.responses.create(model="chat", input="hi", **params)
                assert info.value.body["code"] == "passthrough_not_supported"  # type: ignore[index]
        assert upstream.requests == []
    finally:
        await gw.close()
        await upstream.close()


async def test_budget_cache_and_metrics_apply_as_for_chat(tmp_path: Path) -> None:
    upstream = await FakeOpenAI().start()
    gw = await start_gateway(tmp_path, [
        provider("up", "openai-compatible", baseURL=upstream.url,
                 pricing={"up-model": {"inputPerMillion": "1000000",
                                       "outputPerMillion": "1000000"}}),
        route("chat", [{"provider": "up", "model": "up-model"}],
              cache={"mode": "exact", "ttl": "1m"}),
        virtual_key("team", secretName="team-key",
                    budget={"limit": "1000.00", "period": "1d"})])
    try:
        async with client(gw) as c:
            first = await c.responses.with_raw_response.create(model="chat", input="hi",
                                                               max_output_tokens=20)
            again = await c.responses.with_raw_response.create(model="chat", input="hi",
                                                               max_output_tokens=20)
            async with c.responses.stream(model="chat", input="hi",
                                          max_output_tokens=20) as stream:
                streamed = await stream.get_final_response()
            async with c.responses.stream(model="chat", input="hi",
                                          max_output_tokens=20) as stream:
                replayed = await stream.get_final_response()
        assert first.headers["x-llmgate-cache"] == "miss"
        assert again.headers["x-llmgate-cache"] == "hit"
        assert again.parse().output_text == first.parse().output_text
        assert replayed.output_text == streamed.output_text == first.parse().output_text
        assert len(upstream.requests) == 2  # one JSON, one stream: hits never go upstream
        usage = first.parse().usage
        assert usage is not None
        # $1 per token: what the two upstream answers used, booked against the budget.
        spent, _ = await gw.settled()
        assert spent == 2 * (usage.input_tokens + usage.output_tokens)
        assert gw.metrics.registry.get_sample_value("llmgate_tokens_total", {
            "route": "chat", "provider": "up", "model": "up-model", "virtual_key": "team",
            "direction": "input"}) == 2 * usage.input_tokens
    finally:
        await gw.close()
        await upstream.close()


async def test_a_stream_cut_mid_way_ends_with_error_and_response_failed(
        tmp_path: Path) -> None:
    upstream = await FakeOpenAI().start()
    upstream.script.append(Behaviour(kind="cut", chunks_before=2))
    gw = await gateway_for(tmp_path, "openai-compatible", "up-model", baseURL=upstream.url)
    try:
        events = await sse_events(gw, "/v1/responses", {"model": "chat", "input": "hi",
                                                        "stream": True})
        names = [name for name, _ in events]
        assert names[0] == "response.created" and "response.output_text.delta" in names
        assert names[-2:] == ["error", "response.failed"]
        assert "response.completed" not in names
        failed = orjson.loads(events[-1][1])["response"]
        assert failed["status"] == "failed" and failed["error"]["message"]
    finally:
        await gw.close()
        await upstream.close()


@pytest.mark.parametrize(("tools", "param"), [(1, "tools"), ("x", "tools"),
                                              ([1], "tools[0]"), ([None], "tools[0]")])
def test_tools_of_a_wrong_shape_are_a_400_naming_them(tools: Any, param: str) -> None:
    """Found by the fuzz stage: `tools: 1` was a 500 (iterated as a list)."""
    with pytest.raises(BadRequest) as info:
        parse_responses(orjson.dumps({"model": "m", "input": "hi", "tools": tools}))
    assert info.value.param == param
