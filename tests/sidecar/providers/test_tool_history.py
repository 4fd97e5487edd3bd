"""Tool calls in the client's history, as every translator replays them upstream: decoded
once (`chat.requested_calls`), and a broken call is a 400 naming it, never a 500."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from llmgate_sidecar.errors import BadRequest
from llmgate_sidecar.upstream.providers import anthropic, bedrock, chat, gemini

TURN = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "call_1", "type": "function",
     "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
    {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": ""}}]}


def test_calls_are_decoded_once_for_every_translator() -> None:
    assert chat.requested_calls(TURN, 3) == [
        chat.RequestedCall("call_1", "get_weather", {"city": "Paris"}),
        chat.RequestedCall("call_2", "now", {})]
    assert anthropic.assistant_blocks(TURN, 3)[0] == {
        "type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}
    assert bedrock.assistant_blocks(TURN, 3)[1] == {
        "toolUse": {"toolUseId": "call_2", "name": "now", "input": {}}}
    names: dict[str, str] = {}
    assert gemini.model_parts(TURN, 3, names)[0] == {
        "functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}
    assert names == {"call_1": "get_weather", "call_2": "now"}


@pytest.mark.parametrize(("call", "param", "code"), [
    ({"id": "x", "type": "function"}, "messages[3].tool_calls", "invalid_type"),
    ("not an object", "messages[3].tool_calls", "invalid_type"),
    ({"id": "x", "function": {"name": "f", "arguments": "{not json"}},
     "messages[3].tool_calls[0].arguments", "invalid_tool_arguments"),
    ({"id": "x", "function": {"name": "f", "arguments": "[1, 2]"}},
     "messages[3].tool_calls[0].arguments", "invalid_tool_arguments"),
])
def test_a_broken_call_is_a_400_naming_it(call: Any, param: str, code: str) -> None:
    turn = {"role": "assistant", "tool_calls": [call]}
    translators: list[Callable[[], object]] = [
        lambda: anthropic.assistant_blocks(turn, 3), lambda: bedrock.assistant_blocks(turn, 3),
        lambda: gemini.model_parts(turn, 3, {})]
    for translate in translators:
        with pytest.raises(BadRequest) as info:
            translate()
        assert (info.value.param, info.value.code) == (param, code)
