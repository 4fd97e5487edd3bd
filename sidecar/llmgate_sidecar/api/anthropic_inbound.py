"""Anthropic Messages requests in: translated into the OpenAI chat body that chat runs on.

`parse_messages` (the parser of the `/v1/messages` endpoint, `api.endpoints`) maps `system`,
content blocks (text, images by base64 or URL), `tool_use`/`tool_result`, `tools`,
`tool_choice`, `stop_sequences`, `max_tokens`, `metadata.user_id`, `temperature`, `top_p`
and `top_k` onto the OpenAI shape; `thinking` and the assistant turns' thinking blocks are
carried as `thinking` / `thinking_blocks` (see upstream.providers.reasoning). What has no
OpenAI equivalent (documents, server tools, images inside tool results) is a 400 naming
the parameter, never dropped silently. Pure: no I/O, and it never sees the answer (see
`messages_api`).
"""

from __future__ import annotations

from typing import Any

import orjson

from llmgate_sidecar.api.inbound import ChatRequest, check_counts, parse_json_object
from llmgate_sidecar.errors import BadRequest

# Request fields that change what the model does and have no OpenAI-shaped equivalent.
_REFUSED = ("mcp_servers", "container", "context_management", "output_config")
# Thinking blocks: in an assistant turn they go back upstream as `thinking_blocks` (signed;
# tool use with thinking requires them); in a user turn they are dropped.
_THINKING_BLOCKS = frozenset({"thinking", "redacted_thinking"})
_PASSED = ("temperature", "top_p", "top_k")


def _bad(message: str, param: str, code: str = "invalid_type") -> BadRequest:
    return BadRequest(message, param=param, code=code)


def parse_messages(raw: bytes) -> ChatRequest:
    body = parse_json_object(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' is required and must be a string", "model")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise _bad("'max_tokens' is required and must be a positive integer", "max_tokens",
                   "invalid_type" if "max_tokens" in body else "missing_required_parameter")
    check_counts(body)
    thinking = body.get("thinking")  # Anthropic's own object, carried as is
    if thinking is not None and not isinstance(thinking, dict):
        raise _bad("'thinking' must be an object", "thinking")
    for name in _REFUSED:
        value = body.get(name)
        if value not in (None, False, [], {}) and not (
                isinstance(value, dict) and value.get("type") == "disabled"):
            raise _bad(f"'{name}' is not supported by the llmgate Messages API",
                       name, "unsupported_parameter")
    stream = body.get("stream", False) or False
    if not isinstance(stream, bool):
        raise _bad("'stream' must be a boolean", "stream")
    out: dict[str, Any] = {"model": model, "max_tokens": max_tokens,
                           "messages": [*system_messages(body.get("system")),
                                        *convert_messages(body.get("messages"))]}
    for name in _PASSED:
        if body.get(name) is not None:
            out[name] = body[name]
    if thinking is not None:
        out["thinking"] = thinking
    stop = body.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _bad("'stop_sequences' must be an array of strings", "stop_sequences")
        if stop:
            out["stop"] = stop
    user = (body.get("metadata") or {}).get("user_id") \
        if isinstance(body.get("metadata"), dict) else None
    if isinstance(user, str):
        out["user"] = user
    add_tools(out, body.get("tools"), body.get("tool_choice"))
    if stream:
        out["stream"] = True
    # Usage is always needed: the Messages API reports it in every answer and stream.
    return ChatRequest(body=out, model=model, stream=stream, include_usage=True,
                       max_tokens=max_tokens)


def system_messages(system: Any) -> list[dict[str, Any]]:
    if system is None or system == "" or system == []:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    if isinstance(system, list) and all(isinstance(b, dict) and b.get("type") == "text"
                                        for b in system):
        return [{"role": "system", "content": "\n\n".join(str(b.get("text", ""))
                                                          for b in system)}]
    raise _bad("'system' must be a string or an array of text blocks", "system")


def convert_messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list):
        raise _bad("'messages' must be a non-empty array", "messages")
    if not messages:
        raise _bad("'messages' must be a non-empty array", "messages", "empty_array")
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise _bad(f"messages[{i}] must be an object with role 'user' or 'assistant'",
                       f"messages[{i}]")
        content = message.get("content")
        if isinstance(content, str):
            out.append({"role": message["role"], "content": content})
        elif not isinstance(content, list):
            raise _bad(f"messages[{i}].content must be a string or an array of blocks",
                       f"messages[{i}].content")
        elif message["role"] == "user":
            out.extend(user_turn(content, i))
        else:
            out.append(assistant_turn(content, i))
    return out


def user_turn(blocks: list[Any], i: int) -> list[dict[str, Any]]:
    """Tool results become `tool` messages (first: they answer the previous turn's calls);
    the rest stays one user message."""
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        where = f"messages[{i}].content[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image":
            parts.append(image_part(block, where))
        elif kind == "tool_result":
            results.append(tool_message(block, where))
        elif kind in _THINKING_BLOCKS:
            continue
        else:
            raise _bad(f"{where}: content block type {kind!r} is not supported by the "
                       f"llmgate Messages API", where, "unsupported_content")
    if not parts:
        return results
    if len(parts) == 1 and parts[0]["type"] == "text":
        return [*results, {"role": "user", "content": parts[0]["text"]}]
    return [*results, {"role": "user", "content": parts}]


def image_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    elif isinstance(source, dict) and source.get("type") == "url":
        url = str(source.get("url", ""))
    else:
        raise _bad(f"{where}: image source must be base64 or url", where,
                   "unsupported_content")
    return {"type": "image_url", "image_url": {"url": url}}


def tool_message(block: dict[str, Any], where: str) -> dict[str, Any]:
    content = block.get("content", "")
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise _bad(f"{where}: only text is supported inside a tool_result", where,
                           "unsupported_content")
            texts.append(str(part.get("text", "")))
        content = "\n".join(texts)
    elif not isinstance(content, str):
        raise _bad(f"{where}: tool_result content must be a string or text blocks", where)
    if block.get("is_error"):
        # OpenAI tool messages have no error flag; say it in the text the model reads.
        content = f"[tool error] {content}"
    return {"role": "tool", "tool_call_id": str(block.get("tool_use_id", "")),
            "content": content}


def assistant_turn(blocks: list[Any], i: int) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    thinking: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        where = f"messages[{i}].content[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            calls.append({"id": str(block.get("id", "")), "type": "function",
                          "function": {"name": str(block.get("name", "")),
                                       "arguments": orjson.dumps(
                                           block.get("input") or {}).decode()}})
        elif kind in _THINKING_BLOCKS:
            thinking.append(block)  # signed: goes back to the upstream as it came
        else:
            raise _bad(f"{where}: content block type {kind!r} is not supported in an "
                       f"assistant turn", where, "unsupported_content")
    message: dict[str, Any] = {"role": "assistant",
                               "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    if thinking:
        message["thinking_blocks"] = thinking
    return message


def add_tools(out: dict[str, Any], tools: Any, choice: Any) -> None:
    if tools:
        if not isinstance(tools, list):
            raise _bad("'tools' must be an array", "tools")
        functions = []
        for k, tool in enumerate(tools):
            if not isinstance(tool, dict) or tool.get("type") not in (None, "custom") \
                    or not isinstance(tool.get("name"), str):
                raise _bad(f"tools[{k}]: only client tools (name, input_schema) are "
                           f"supported", f"tools[{k}]", "unsupported_parameter")
            function = {"name": tool["name"],
                        "parameters": tool.get("input_schema") or {"type": "object"}}
            if tool.get("description"):
                function["description"] = tool["description"]
            functions.append({"type": "function", "function": function})
        out["tools"] = functions
    if choice is None:
        return
    if not isinstance(choice, dict):
        raise _bad("'tool_choice' must be an object", "tool_choice")
    kind = choice.get("type")
    mapped = {"auto": "auto", "any": "required", "none": "none"}.get(str(kind))
    if kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": str(choice.get("name"))}}
    elif mapped is not None:
        out["tool_choice"] = mapped
    else:
        raise _bad("'tool_choice.type' must be auto, any, tool or none", "tool_choice")
    if choice.get("disable_parallel_tool_use") and out.get("tools"):
        out["parallel_tool_calls"] = False
