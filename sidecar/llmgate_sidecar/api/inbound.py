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


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise BadRequest("request body is empty; send a JSON object", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object", code="invalid_json")
    return body


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
    max_tokens = None
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRequest(f"'{name}' must be a positive integer", param=name,
                             code="invalid_type")
        if value < 1:
            raise below_minimum(name, value)
        max_tokens = value
    return ChatRequest(body=body, model=model, stream=stream, include_usage=include_usage,
                       max_tokens=max_tokens)
