"""The reasoning shapes every translator shares (`upstream.providers.reasoning`): what a
client may send, the 400s for what it may not, and the OpenAI-family clean-up."""

from __future__ import annotations

from typing import Any

import pytest
from llmgate_sidecar.errors import BadRequest
from llmgate_sidecar.upstream.providers import reasoning


@pytest.mark.parametrize(("body", "budget"), [
    ({}, None),
    ({"reasoning_effort": "none"}, 0),
    ({"reasoning_effort": "high"}, 24576),
    ({"thinking": {"type": "disabled"}}, 0),
    ({"thinking": {"type": "enabled", "budget_tokens": 3000}, "reasoning_effort": "low"}, 3000),
])
def test_requested_budget(body: dict[str, Any], budget: int | None) -> None:
    assert reasoning.requested_budget(body) == budget


@pytest.mark.parametrize(("body", "param"), [
    ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    ({"thinking": {"type": "enabled"}}, "thinking"),
    ({"thinking": {"type": "enabled", "budget_tokens": True}}, "thinking"),
    ({"thinking": "on"}, "thinking"),
])
def test_wrong_reasoning_requests_are_400s_naming_the_field(body: dict[str, Any],
                                                            param: str) -> None:
    with pytest.raises(BadRequest) as info:
        reasoning.requested_budget(body)
    assert (info.value.param, info.value.code) == (param, "invalid_value")


@pytest.mark.parametrize("blocks", [
    "x", [{"type": "thinking", "thinking": "t"}], [{"type": "redacted_thinking"}],
    [{"type": "text", "text": "t"}],
])
def test_history_blocks_must_be_signed_or_redacted(blocks: Any) -> None:
    with pytest.raises(BadRequest) as info:
        reasoning.history_blocks({"role": "assistant", "thinking_blocks": blocks}, 2)
    assert info.value.param == "messages[2].thinking_blocks"


def test_history_blocks_keep_only_what_the_provider_needs() -> None:
    blocks = [{"type": "thinking", "thinking": "t", "signature": "s", "extra": 1},
              {"type": "redacted_thinking", "data": "d"}]
    assert reasoning.history_blocks({"thinking_blocks": blocks}, 1) == [
        {"type": "thinking", "thinking": "t", "signature": "s"},
        {"type": "redacted_thinking", "data": "d"}]


def test_openai_fields_copy_nothing_when_there_is_nothing_to_change() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert reasoning.openai_fields(body) is body
    signed = {"model": "m", "thinking": {"type": "enabled", "budget_tokens": 20000},
              "messages": [{"role": "assistant", "content": "a",
                            "thinking_blocks": [{"type": "thinking"}]}]}
    assert reasoning.openai_fields(signed) == {
        "model": "m", "reasoning_effort": "high",
        "messages": [{"role": "assistant", "content": "a"}]}
    assert "thinking_blocks" in signed["messages"][0]  # the client's body is not changed


def test_unsigned_reasoning_has_no_blocks_to_send_back() -> None:
    assert reasoning.message_fields([reasoning.thinking_block("t", "")]) == {
        "reasoning_content": "t"}
    assert reasoning.message_fields([]) == {}


def test_openai_fields_strict_leave_out_what_other_providers_added() -> None:
    """For OpenAI and Azure (`strict`), Gemini's `extra_content` (message and tool calls)
    and `reasoning_content` are left out; other OpenAI-compatible servers get them."""
    signed = {"google": {"thought_signature": "sig"}}
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    body = {"model": "m", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "reasoning_content": "r",
         "tool_calls": [{**call, "extra_content": signed}]},
        {"role": "tool", "tool_call_id": "c1", "content": "18C"},
        {"role": "assistant", "content": "a", "extra_content": signed}]}
    assert reasoning.openai_fields(body) is body
    assert reasoning.openai_fields(body, strict=True)["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "18C"},
        {"role": "assistant", "content": "a"}]
    assert body["messages"][1]["tool_calls"][0]["extra_content"] == signed  # not changed
    plain = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert reasoning.openai_fields(plain, strict=True) is plain
