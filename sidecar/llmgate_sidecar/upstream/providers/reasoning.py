"""Reasoning ("thinking") in OpenAI's chat shape: one definition for every translator.

Answers carry it as OpenAI-compatible servers do, `reasoning_content` (the thinking text) on
the message and on stream deltas, plus `thinking_blocks`: Anthropic-shaped blocks
(`{"type": "thinking", "thinking", "signature"}`, `{"type": "redacted_thinking", "data"}`)
that a client sends back in the next request's assistant turn, so providers that require
their signed thinking back (Anthropic, Claude on Vertex AI and on Bedrock: tool use with
thinking) get it byte for byte. In a stream, `thinking_blocks: [{"type": "thinking", "thinking": "",
"signature"}]` ends the thinking block whose text came as `reasoning_content` since the
previous block; a redacted block comes whole. Requests: Anthropic's `thinking` object or
OpenAI's `reasoning_effort` become each provider's budget (`requested_budget`). Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmgate_sidecar.errors import BadRequest

# reasoning_effort -> thinking budget in tokens (Anthropic's minimum budget is 1,024).
EFFORT_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}
ANTHROPIC_MIN_BUDGET = 1024
THINKING, REDACTED = "thinking", "redacted_thinking"


def requested_budget(body: Mapping[str, Any]) -> int | None:
    """Thinking tokens the client asked for: Anthropic's `thinking` object wins over
    `reasoning_effort`; 0 when it turned thinking off, None when it said nothing."""
    thinking = body.get("thinking")
    if thinking is not None:
        kind = thinking.get("type") if isinstance(thinking, dict) else None
        if kind == "disabled":
            return 0
        budget = thinking.get("budget_tokens") if isinstance(thinking, dict) else None
        if kind != "enabled" or isinstance(budget, bool) or not isinstance(budget, int) \
                or budget < 1:
            raise BadRequest("'thinking' must be {\"type\": \"enabled\", \"budget_tokens\": "
                             "<positive integer>} or {\"type\": \"disabled\"}",
                             param="thinking", code="invalid_value")
        return budget
    effort = body.get("reasoning_effort")
    if effort is None:
        return None
    if effort == "none":
        return 0
    if effort not in EFFORT_BUDGETS:
        raise BadRequest("'reasoning_effort' must be none, minimal, low, medium or high",
                         param="reasoning_effort", code="invalid_value")
    return EFFORT_BUDGETS[effort]


def anthropic_thinking(body: Mapping[str, Any], max_tokens: int) -> dict[str, Any] | None:
    """Anthropic's (and Claude's on Vertex AI and Bedrock) `thinking` request field, or None.
    A budget from `reasoning_effort` is fitted under `max_tokens`, as Anthropic requires."""
    budget = requested_budget(body)
    if budget is None:
        return None
    if budget == 0:
        return {"type": "disabled"}
    if "thinking" in body:
        return dict(body["thinking"])  # Anthropic's own object: as the client wrote it
    budget = min(budget, max_tokens - 1)
    if budget < ANTHROPIC_MIN_BUDGET:
        raise BadRequest(f"'reasoning_effort' needs max_tokens above {ANTHROPIC_MIN_BUDGET} "
                         f"with this provider (its thinking budget is at least "
                         f"{ANTHROPIC_MIN_BUDGET} tokens and below max_tokens)",
                         param="max_tokens", code="invalid_value")
    return {"type": "enabled", "budget_tokens": budget}


def openai_fields(body: dict[str, Any], *, strict: bool = False) -> dict[str, Any]:
    """`body` for an OpenAI-family upstream, which knows neither Anthropic's `thinking`
    (mapped onto `reasoning_effort` unless that is set) nor `thinking_blocks` in history
    (left out: only the provider that signed them takes them back). `strict`: the upstream
    refuses message fields it does not know (`STRICT_FIELDS`, see `OpenAIAdapter`), so
    what llmgate's answers add to a message or tool call for other providers (Gemini's
    `extra_content`, `reasoning_content`) is left out too. The same object when there is
    nothing to change (the hot path copies nothing)."""
    messages = body.get("messages")
    drop = STRICT_FIELDS if strict else _SIGNED
    history = messages if isinstance(messages, list) else []
    carried = any(isinstance(m, dict) and (not drop.isdisjoint(m)
                                           or (strict and _signed_calls(m))) for m in history)
    if "thinking" not in body and not carried:
        return body
    out = dict(body)
    thinking = out.pop("thinking", None)
    if thinking is not None and out.get("reasoning_effort") is None:
        budget = requested_budget({"thinking": thinking})
        if budget:
            out["reasoning_effort"] = ("low" if budget < 4096 else
                                       "medium" if budget < 16384 else "high")
    if carried:
        out["messages"] = [_without(m, drop, strict) if isinstance(m, dict) else m
                           for m in history]
    return out


# Fields of a history message that only the provider which produced them takes back.
_SIGNED = frozenset({"thinking_blocks"})
# ...and, for upstreams that refuse unknown message fields (api.openai.com, Azure OpenAI:
# HTTP 400 "Additional properties are not allowed ('extra_content' was unexpected)"), every
# field llmgate adds to an answer's message beyond OpenAI's own; `extra_content` also on
# tool calls.
STRICT_FIELDS = frozenset({"thinking_blocks", "extra_content", "reasoning_content"})


def _signed_calls(message: Mapping[str, Any]) -> bool:
    calls = message.get("tool_calls")
    return isinstance(calls, list) and any(isinstance(c, dict) and "extra_content" in c
                                           for c in calls)


def _without(message: dict[str, Any], drop: frozenset[str], strict: bool) -> dict[str, Any]:
    out = {k: v for k, v in message.items() if k not in drop}
    if strict and _signed_calls(message):
        out["tool_calls"] = [{k: v for k, v in c.items() if k != "extra_content"}
                             if isinstance(c, dict) else c for c in message["tool_calls"]]
    return out


def history_blocks(message: Mapping[str, Any], i: int) -> list[dict[str, Any]]:
    """The `thinking_blocks` of assistant turn `messages[i]`, checked; [] when it has none.
    A client's `reasoning_content` alone carries no signature and is not sent back."""
    blocks = message.get("thinking_blocks")
    if blocks is None:
        return []
    where = f"messages[{i}].thinking_blocks"
    if not isinstance(blocks, list):
        raise BadRequest(f"{where} must be an array", param=where, code="invalid_type")
    out = []
    for j, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == THINKING and isinstance(block.get("thinking"), str) \
                and isinstance(block.get("signature"), str):
            out.append({"type": THINKING, "thinking": block["thinking"],
                        "signature": block["signature"]})
        elif kind == REDACTED and isinstance(block.get("data"), str):
            out.append({"type": REDACTED, "data": block["data"]})
        else:
            raise BadRequest(f"{where}[{j}] must be a thinking block (thinking, signature) or "
                             f"a redacted_thinking block (data)", param=where,
                             code="invalid_value")
    return out


def thinking_block(text: str, signature: str) -> dict[str, Any]:
    return {"type": THINKING, "thinking": text, "signature": signature}


def redacted_block(data: str) -> dict[str, Any]:
    return {"type": REDACTED, "data": data}


def message_fields(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """What an answer's reasoning adds to the OpenAI message: nothing without blocks;
    `thinking_blocks` only when the provider signed them (worth sending back)."""
    if not blocks:
        return {}
    text = "".join(str(b.get("thinking", "")) for b in blocks if b.get("type") == THINKING)
    if not any(b.get("signature") or b.get("type") == REDACTED for b in blocks):
        return {"reasoning_content": text}
    return {"reasoning_content": text, "thinking_blocks": blocks}


def gemini_config(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """Gemini's (and Vertex's) `generationConfig.thinkingConfig`, or None: the budget, and
    the thoughts included in the answer whenever thinking is on."""
    budget = requested_budget(body)
    if budget is None:
        return None
    return {"thinkingBudget": budget, "includeThoughts": True} if budget else \
        {"thinkingBudget": 0}


def text_delta(text: str) -> dict[str, Any]:
    return {"reasoning_content": text}


def signature_delta(signature: str) -> dict[str, Any]:
    """Ends the current thinking block of a stream with its signature."""
    return {"thinking_blocks": [thinking_block("", signature)]}


def redacted_delta(data: str) -> dict[str, Any]:
    return {"thinking_blocks": [redacted_block(data)]}
