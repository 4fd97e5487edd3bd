"""OpenAI Responses requests in: translated into the OpenAI chat body every adapter takes.

`parse_responses` (the `/v1/responses` endpoint's parser, `api.endpoints`) maps
`instructions`, `input` (a string, or message / `function_call` / `function_call_output`
items with text and image parts), function `tools`, `tool_choice`, `max_output_tokens`,
`text.format` (JSON mode and JSON schema), `reasoning.effort`, `temperature`, `top_p`,
`parallel_tool_calls` and `user` onto chat. What needs OpenAI's own server (stored
conversations, built-in tools, item references) is marked `native`: such a request is passed
through to OpenAI targets only (a 400 naming the parameter elsewhere). Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmgate_sidecar.api.inbound import ChatRequest, check_counts, parse_json_object
from llmgate_sidecar.errors import BadRequest

# Request fields that only OpenAI's stateful Responses server can honour.
_NATIVE_FIELDS = ("previous_response_id", "conversation", "prompt")
_PASSED = ("temperature", "top_p", "parallel_tool_calls", "user", "seed")
_DROPPED_ITEMS = frozenset({"reasoning"})  # the model's own bookkeeping, never re-sent


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    """The translated chat request, and (when not None) the parameter that needs OpenAI's
    own Responses server, so the request must be passed through instead of translated."""

    chat: ChatRequest
    native: str | None
    raw: dict[str, Any]  # the Responses body as it came (sent as is to OpenAI itself)

    @property
    def model(self) -> str:
        return self.chat.model

    @property
    def body(self) -> dict[str, Any]:
        return self.chat.body

    @property
    def stream(self) -> bool:
        return self.chat.stream

    @property
    def include_usage(self) -> bool:
        return True  # response.completed always carries usage


def _bad(message: str, param: str, code: str = "invalid_type") -> BadRequest:
    return BadRequest(message, param=param, code=code)


def native_parameter(body: dict[str, Any]) -> str | None:
    """The first parameter of `body` that only OpenAI's Responses server can serve."""
    for name in _NATIVE_FIELDS:
        if body.get(name) not in (None, "", {}):
            return name
    if body.get("background") is True:
        return "background"
    tools = body.get("tools")
    for i, tool in enumerate(tools if isinstance(tools, list) else ()):
        if isinstance(tool, dict) and tool.get("type") != "function":
            return f"tools[{i}]"
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") != "function":
        return "tool_choice"
    items = body.get("input")
    if isinstance(items, list):
        for i, item in enumerate(items):
            kind = item.get("type") if isinstance(item, dict) else None
            if kind not in (None, "message", "function_call", "function_call_output",
                            *_DROPPED_ITEMS):
                return f"input[{i}]"
    return None


def parse_responses(raw: bytes) -> ResponsesRequest:
    body = parse_json_object(raw)
    check_counts(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' is required and must be a string", "model")
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise _bad("'stream' must be a boolean", "stream")
    native = native_parameter(body)
    if native is not None:  # passed through as it came: nothing to translate
        return ResponsesRequest(ChatRequest({"model": model}, model, stream, True, None),
                                native, body)
    out: dict[str, Any] = {"model": model, "messages": [
        *instructions(body.get("instructions")), *input_messages(body.get("input"))]}
    max_tokens = body.get("max_output_tokens")
    if max_tokens is not None:
        out["max_tokens"] = max_tokens
    for name in _PASSED:
        if body.get(name) is not None:
            out[name] = body[name]
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort"):
        out["reasoning_effort"] = reasoning["effort"]
    text_format(out, body.get("text"))
    tools(out, body.get("tools"), body.get("tool_choice"))
    if stream:
        out["stream"] = True
    return ResponsesRequest(ChatRequest(out, model, stream, True, max_tokens), None, body)


def instructions(value: Any) -> list[dict[str, Any]]:
    if value in (None, ""):
        return []
    if not isinstance(value, str):
        raise _bad("'instructions' must be a string", "instructions")
    return [{"role": "system", "content": value}]


def input_messages(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        if not value:
            raise _bad("'input' must not be empty", "input", "empty_string")
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise _bad("'input' is required: a string or a non-empty array of items", "input",
                   "missing_required_parameter" if value is None else "invalid_type")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise _bad(f"{where} must be an object", where)
        kind = item.get("type") or "message"
        if kind == "message":
            out.append(message(item, where))
        elif kind == "function_call":
            call = {"id": str(item.get("call_id") or item.get("id") or ""), "type": "function",
                    "function": {"name": str(item.get("name", "")),
                                 "arguments": str(item.get("arguments") or "{}")}}
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            out.append({"role": "tool", "tool_call_id": str(item.get("call_id", "")),
                        "content": tool_output(item.get("output"), where)})
    if not any(m["role"] != "system" for m in out):
        raise _bad("'input' has no message for the model to answer", "input")
    return out


def message(item: dict[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise _bad(f"{where}.role must be user, assistant, system or developer", where)
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise _bad(f"{where}.content must be a string or an array of parts", where)
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "refusal":
            parts.append({"type": "text", "text": str(part.get("refusal", ""))})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            image: dict[str, Any] = {"url": part["image_url"]}
            if part.get("detail"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise _bad(f"{where}.content[{j}]: part type {kind!r} is not supported by the "
                       f"llmgate Responses API (text, and images by URL, are)",
                       f"{where}.content[{j}]", "unsupported_content")
    if role != "user" or all(p["type"] == "text" for p in parts):
        return {"role": role, "content": "".join(p["text"] for p in parts
                                                 if p["type"] == "text")}
    return {"role": role, "content": parts}


def tool_output(output: Any, where: str) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "".join(str(p.get("text", "")) for p in output
                       if isinstance(p, dict) and p.get("type") in ("input_text", "text"))
    raise _bad(f"{where}.output must be a string or text parts", where)


def text_format(out: dict[str, Any], text: Any) -> None:
    if not isinstance(text, dict):
        return
    fmt = text.get("format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_object":
        out["response_format"] = {"type": "json_object"}
    elif kind == "json_schema":
        assert isinstance(fmt, dict)
        schema = {"name": str(fmt.get("name") or "response"),
                  "schema": fmt.get("schema") or {"type": "object"}}
        if fmt.get("strict") is not None:
            schema["strict"] = bool(fmt["strict"])
        if fmt.get("description"):
            schema["description"] = str(fmt["description"])
        out["response_format"] = {"type": "json_schema", "json_schema": schema}
    if text.get("verbosity"):
        out["verbosity"] = text["verbosity"]


def tools(out: dict[str, Any], value: Any, choice: Any) -> None:
    if value:
        if not isinstance(value, list):
            raise _bad("'tools' must be an array", "tools")
        functions = []
        for i, tool in enumerate(value):
            if not isinstance(tool, dict):
                raise _bad(f"'tools[{i}]' must be an object", f"tools[{i}]")
            function: dict[str, Any] = {"name": str(tool.get("name", "")),
                                        "parameters": tool.get("parameters") or {
                                            "type": "object", "properties": {}}}
            if tool.get("description"):
                function["description"] = tool["description"]
            if tool.get("strict") is not None:
                function["strict"] = bool(tool["strict"])
            functions.append({"type": "function", "function": function})
        out["tools"] = functions
    if choice in ("auto", "none", "required"):
        out["tool_choice"] = choice
    elif isinstance(choice, dict):  # {"type": "function", "name": ...} (others are native)
        out["tool_choice"] = {"type": "function", "function": {"name": str(choice.get("name"))}}
    elif choice is not None:
        raise _bad("'tool_choice' must be auto, none, required or a function", "tool_choice")
