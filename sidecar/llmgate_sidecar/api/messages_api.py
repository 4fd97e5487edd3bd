"""Anthropic Messages answers out: the `Dialect` of `POST /v1/messages`.

Turns chat's OpenAI `chat.completion` into a Messages response (thinking, text and
tool_use blocks, stop_reason, usage), its `chat.completion.chunk` stream into Messages SSE
events (message_start, content_block_start/delta/stop with thinking_delta, signature_delta,
text_delta and input_json_delta, message_delta with stop_reason and usage, message_stop)
one chunk at a time, and gateway errors into Anthropic's `{"type":"error","error":{...}}`
envelope. Signed thinking comes back exactly as the upstream sent it. Pure translation.
"""

from __future__ import annotations

from typing import Any

import orjson

from llmgate_sidecar.api.dialects import ChunkTranslator, StreamTranslator
from llmgate_sidecar.errors import GatewayError
from llmgate_sidecar.upstream.providers import reasoning
from llmgate_sidecar.upstream.providers.base import Usage
from llmgate_sidecar.wire.sse import encode

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                "function_call": "tool_use", "content_filter": "refusal"}
# Anthropic's error types by HTTP status; every other 5xx is an api_error.
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
               403: "permission_error", 404: "not_found_error", 405: "invalid_request_error",
               413: "request_too_large", 429: "rate_limit_error", 529: "overloaded_error"}


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def message_id(openai_id: Any) -> str:
    text = str(openai_id or "")
    return text if text.startswith("msg_") else f"msg_{text or 'llmgate'}"


def usage_json(usage: Usage | None) -> dict[str, int]:
    """Anthropic counts cache writes and reads apart from input tokens; OpenAI's
    prompt_tokens include both."""
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0}
    return {"input_tokens": max(0, usage.prompt_tokens - usage.cached_tokens
                                - usage.cache_write_tokens),
            "output_tokens": usage.completion_tokens,
            "cache_creation_input_tokens": usage.cache_write_tokens,
            "cache_read_input_tokens": usage.cached_tokens}


def tool_input(arguments: Any) -> Any:
    if isinstance(arguments, dict):
        return arguments
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def thinking_content(reply: dict[str, Any]) -> list[dict[str, Any]]:
    """The answer's thinking as Messages blocks: the upstream's signed blocks exactly as
    they came, else plain `reasoning_content` (OpenAI-compatible upstreams) unsigned."""
    blocks = reply.get("thinking_blocks")
    if isinstance(blocks, list) and blocks:
        return [b for b in blocks if isinstance(b, dict)]
    text = plain_reasoning(reply)
    return [reasoning.thinking_block(text, "")] if text else []


def plain_reasoning(message: dict[str, Any]) -> str:
    """Unsigned reasoning text of a message or delta: `reasoning_content` (DeepSeek, vLLM,
    llmgate's translators) or `reasoning` (Groq, OpenRouter)."""
    text = message.get("reasoning_content") or message.get("reasoning")
    return text if isinstance(text, str) else ""


def message(payload: bytes) -> bytes:
    data = orjson.loads(payload)
    choice = (data.get("choices") or [{}])[0]
    reply = choice.get("message") or {}
    content: list[dict[str, Any]] = thinking_content(reply)
    text = reply.get("content")
    if isinstance(text, list):  # some OpenAI-compatible servers answer with parts
        text = "".join(str(p.get("text", "")) for p in text if isinstance(p, dict))
    if text:
        content.append({"type": "text", "text": text})
    for call in reply.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append({"type": "tool_use", "id": str(call.get("id", "")),
                        "name": str(function.get("name", "")),
                        "input": tool_input(function.get("arguments"))})
    return orjson.dumps({
        "id": message_id(data.get("id")), "type": "message", "role": "assistant",
        "model": data.get("model", ""), "content": content,
        "stop_reason": STOP_REASONS.get(str(choice.get("finish_reason")), "end_turn"),
        "stop_sequence": None,
        "usage": usage_json(Usage.from_openai(data.get("usage")))})


class MessagesStream(ChunkTranslator):
    """One stream's OpenAI chunks -> Messages events. Holds only block indexes and usage."""

    def __init__(self, model: str) -> None:
        super().__init__()
        self._model = model
        self._started = False
        self._index = -1  # the open content block, -1 when none is open
        self._kind = ""  # "text", "tool_use" or "thinking": what the open block is
        self._tools: dict[int, int] = {}  # OpenAI tool_calls index -> content block index
        self._blocks = 0
        self._stop_reason = "end_turn"

    def _chunk(self, chunk: dict[str, Any]) -> bytes:
        out = b"" if self._started else self._start(chunk)
        if chunk.get("usage"):
            self._usage = Usage.from_openai(chunk["usage"])
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            thought = plain_reasoning(delta)
            if thought:
                out += self._thinking(thought)
            for block in delta.get("thinking_blocks") or []:
                out += self._thinking_block(block)
            if delta.get("content"):
                out += self._text(str(delta["content"]))
            for call in delta.get("tool_calls") or []:
                out += self._tool(call)
            if choice.get("finish_reason"):
                self._stop_reason = STOP_REASONS.get(str(choice["finish_reason"]), "end_turn")
        return out

    def _start(self, chunk: dict[str, Any]) -> bytes:
        self._started = True
        return encode({"type": "message_start", "message": {
            "id": message_id(chunk.get("id")), "type": "message", "role": "assistant",
            "model": chunk.get("model") or self._model, "content": [], "stop_reason": None,
            "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}},
            "message_start")

    def _open(self, block: dict[str, Any]) -> bytes:
        out = self._close()
        self._index, self._kind = self._blocks, block["type"]
        self._blocks += 1
        return out + encode({"type": "content_block_start", "index": self._index,
                             "content_block": block}, "content_block_start")

    def _close(self) -> bytes:
        if self._index < 0:
            return b""
        index, self._index = self._index, -1
        return encode({"type": "content_block_stop", "index": index}, "content_block_stop")

    def _text(self, text: str) -> bytes:
        out = b"" if self._kind == "text" and self._index >= 0 else \
            self._open({"type": "text", "text": ""})
        return out + encode({"type": "content_block_delta", "index": self._index,
                             "delta": {"type": "text_delta", "text": text}},
                            "content_block_delta")

    def _thinking(self, text: str) -> bytes:
        out = b"" if self._kind == reasoning.THINKING and self._index >= 0 else \
            self._open(reasoning.thinking_block("", ""))
        return out + encode({"type": "content_block_delta", "index": self._index,
                             "delta": {"type": "thinking_delta", "thinking": text}},
                            "content_block_delta")

    def _thinking_block(self, block: Any) -> bytes:
        """A signature ends the open thinking block; a redacted block comes whole."""
        if not isinstance(block, dict):
            return b""
        if block.get("type") == reasoning.REDACTED:
            return self._open(reasoning.redacted_block(str(block.get("data", "")))) + \
                self._close()
        out = b"" if self._kind == reasoning.THINKING and self._index >= 0 else \
            self._open(reasoning.thinking_block("", ""))
        if block.get("thinking"):  # a whole block at once: its text first
            out += self._thinking(str(block["thinking"]))
        return out + encode({"type": "content_block_delta", "index": self._index,
                             "delta": {"type": "signature_delta",
                                       "signature": str(block.get("signature", ""))}},
                            "content_block_delta") + self._close()

    def _tool(self, call: dict[str, Any]) -> bytes:
        key = int(call.get("index", 0))
        function = call.get("function") or {}
        out = b""
        if key not in self._tools:
            out = self._open({"type": "tool_use", "id": str(call.get("id", "")),
                              "name": str(function.get("name", "")), "input": {}})
            self._tools[key] = self._index
        arguments = function.get("arguments")
        if arguments:
            out += encode({"type": "content_block_delta", "index": self._tools[key],
                           "delta": {"type": "input_json_delta", "partial_json": arguments}},
                          "content_block_delta")
        return out

    def finish(self) -> bytes:
        out = b"" if self._started else self._start({})
        out += self._close()
        out += encode({"type": "message_delta",
                       "delta": {"stop_reason": self._stop_reason, "stop_sequence": None},
                       "usage": usage_json(self._usage)}, "message_delta")
        return out + encode({"type": "message_stop"}, "message_stop")

    def error(self, error_type: str, code: str, message: str) -> bytes:
        kind = "overloaded_error" if code == "shutdown" else "api_error"
        return encode({"type": "error", "error": {"type": kind, "message": message}}, "error")


class AnthropicDialect:
    api = "messages"

    def completion(self, payload: bytes) -> bytes:
        return message(payload)

    def translator(self, model: str) -> StreamTranslator:
        return MessagesStream(model)

    def envelope(self, exc: GatewayError) -> dict[str, Any]:
        # `code` is llmgate's own, machine-readable reason; Anthropic SDKs ignore it.
        return {"type": "error", "error": {"type": error_type(exc.status),
                                           "message": exc.message, "code": exc.code,
                                           **exc.extra}}


ANTHROPIC = AnthropicDialect()
