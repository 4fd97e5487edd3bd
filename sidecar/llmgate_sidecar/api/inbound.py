"""Parse what routing needs from an inbound OpenAI request, and nothing more.

The body is parsed once (orjson) and checked for the fields the gateway acts on (`model`,
`messages`, `stream`, `stream_options`, token limits); everything else is forwarded
untouched, so the hot path does no whole-body validation. Wrong shapes are 400s that name
the parameter, with OpenAI's codes where OpenAI has one (`empty_array`,
`integer_below_min_value`, `missing_required_parameter`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from llmgate_sidecar.errors import BadRequest


@dataclass(frozen=True, slots=True)
class ChatRequest:
    body: dict[str, Any]
    model: str
    stream: bool
    include_usage: bool
    max_tokens: int | None


def below_minimum(name: str, value: int) -> BadRequest:
    """OpenAI's own 400 for an integer under its minimum (e.g. `max_tokens: 0`)."""
    return BadRequest(f"Invalid '{name}': integer below minimum value. Expected a value >= 1, "
                      f"but got {value} instead.", param=name, code="integer_below_min_value")


# The counts the budget reservation multiplies (`n`, `best_of`) or bounds output with (the
# token limits), checked at the edge on every JSON endpoint: a float, a string or an absurd
# value would otherwise be forwarded and reserved as if absent. OpenAI documents n <= 128.
MAX_CHOICES = 128
MAX_OUTPUT_TOKENS_LIMIT = 2**31 - 1
COUNT_FIELDS: dict[str, int] = {
    "n": MAX_CHOICES, "best_of": MAX_CHOICES, "max_tokens": MAX_OUTPUT_TOKENS_LIMIT,
    "max_completion_tokens": MAX_OUTPUT_TOKENS_LIMIT,
    "max_output_tokens": MAX_OUTPUT_TOKENS_LIMIT,
}


def check_counts(body: dict[str, Any]) -> None:
    """400 unless each of `COUNT_FIELDS` in `body` is absent, null or an integer in
    [1, its maximum] (the one check every endpoint shares)."""
    for name, maximum in COUNT_FIELDS.items():
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRequest(f"Invalid '{name}': expected an integer, got "
                             f"{type(value).__name__} {orjson.dumps(value).decode()[:40]}.",
                             param=name, code="invalid_type")
        if value < 1:
            raise below_minimum(name, value)
        if value > maximum:
            raise BadRequest(f"Invalid '{name}': integer above maximum value. Expected a value "
                             f"<= {maximum}, but got {value} instead.", param=name,
                             code="integer_above_max_value")


# Deepest JSON nesting accepted: the serialisers a body meets on its way upstream stop at
# 254 (orjson) or the interpreter's recursion limit, which would turn into a 500.
MAX_JSON_DEPTH = 128


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise BadRequest("request body is empty; send a JSON object", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object", code="invalid_json")
    # Counting brackets is C-speed: only bodies with enough of them are walked.
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH:
        check_depth(body)
    return body


def check_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> None:
    """400 when `value` nests deeper than `limit` (iterative: no recursion to exhaust)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise BadRequest(f"request body is nested more than {limit} levels deep",
                             code="invalid_json")
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, dict | list))


def required_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a string", param="model",
                         code="invalid_type")
    return model


def required_messages(body: dict[str, Any]) -> list[Any]:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise BadRequest("'messages' is required and must be an array", param="messages",
                         code="invalid_type" if "messages" in body
                         else "missing_required_parameter")
    if not messages:
        raise BadRequest("Invalid 'messages': empty array. Expected an array with minimum "
                         "length 1", param="messages", code="empty_array")
    return messages


def parse_chat(raw: bytes) -> ChatRequest:
    body = parse_json_object(raw)
    model = required_model(body)
    messages = required_messages(body)
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a string 'role'",
                             param=f"messages[{i}]", code="invalid_type")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean", param="stream", code="invalid_type")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise BadRequest("'stream_options' must be an object", param="stream_options",
                         code="invalid_type")
    include_usage = bool(options and options.get("include_usage"))
    check_counts(body)
    max_tokens = body.get("max_tokens")
    if body.get("max_completion_tokens") is not None:
        max_tokens = body["max_completion_tokens"]
    return ChatRequest(body=body, model=model, stream=stream, include_usage=include_usage,
                       max_tokens=max_tokens)
