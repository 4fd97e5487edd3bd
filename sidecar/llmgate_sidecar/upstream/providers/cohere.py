"""Cohere v2 Chat (`POST /v2/chat`) <-> OpenAI chat completions, stream included.

Cohere v2 messages are close to OpenAI's (roles, tool_calls, tool_call_id), so requests
mostly rename sampling parameters (`reasoning_effort` / `thinking` become Cohere's
`thinking.token_budget`); responses carry content blocks (`thinking` ones become
`reasoning_content`), a `tool_plan` and `usage.tokens`. Stream events (message-start,
content-delta, tool-call-start/delta, message-end) become OpenAI chunks one by one. Pure
translation; routing does the I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from llmgate_contract.config import Provider, Target
from llmgate_contract.providers import KINDS

from llmgate_sidecar.errors import BadRequest, UpstreamError
from llmgate_sidecar.upstream.providers import chat, embedding, reasoning
from llmgate_sidecar.upstream.providers.base import (
    Credentials,
    EmbeddingsAdapter,
    PassthroughAdapter,
    StreamItem,
    TokenCounter,
    UpstreamRequest,
    Usage,
)
from llmgate_sidecar.wire.sse import Event

FINISH_REASONS = {"COMPLETE": "stop", "STOP_SEQUENCE": "stop", "MAX_TOKENS": "length",
                  "TOOL_CALL": "tool_calls"}
_PARAMS = {"temperature": "temperature", "top_p": "p", "top_k": "k", "seed": "seed",
           "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty"}
_CONTEXT_HINTS = ("too many tokens", "context length", "maximum context")
_FILTER_HINTS = ("blocked input", "blocked output", "violate our usage policy")


class CohereAdapter:
    def __init__(self, provider: Provider, credentials: Credentials) -> None:
        self.provider = provider
        base = (provider.base_url or KINDS[provider.kind].default_base_url or "").rstrip("/")
        self._url = base + ("/chat" if base.endswith("/v2") else "/v2/chat")
        self._embed_url = base + ("/embed" if base.endswith("/v2") else "/v2/embed")
        self._headers = {"content-type": "application/json", "accept": "application/json",
                         **provider.headers}
        if credentials.api_key:
            self._headers["authorization"] = f"Bearer {credentials.api_key}"
        self.embeddings: EmbeddingsAdapter | None = self if KINDS[provider.kind].embeddings \
            else None
        self.passthrough: PassthroughAdapter | None = None
        self.counter: TokenCounter | None = None  # count_tokens: estimated

    async def prepare(self) -> None:
        """Nothing to fetch before translating."""

    def chat_request(self, body: dict[str, Any], target: Target, *,
                     stream: bool) -> UpstreamRequest:
        return UpstreamRequest("POST", self._url, self._headers,
                               orjson.dumps(cohere_body(body, target.model, stream=stream)))

    def chat_response(self, payload: bytes, target: Target) -> tuple[bytes, Usage]:
        data = chat.load_object(payload, self.provider, target, "response")
        message = data.get("message")
        if not isinstance(message, dict):
            raise chat.malformed(self.provider, target, "response has no message")
        content = message.get("content") or []
        calls = message.get("tool_calls") or []
        if not isinstance(content, list) or not isinstance(calls, list):
            raise chat.malformed(self.provider, target, "message content is not a list")
        text = "".join(str(b.get("text", "")) for b in content
                       if isinstance(b, dict) and b.get("type") == "text")
        tool_calls = [chat.tool_call(str(c.get("id")), str(c["function"].get("name")),
                                     tool_args(c["function"].get("arguments")))
                      for c in calls if isinstance(c, dict) and isinstance(c.get("function"),
                                                                           dict)]
        thoughts = "".join(str(b.get("thinking", "")) for b in content
                           if isinstance(b, dict) and b.get("type") == "thinking")
        usage = usage_of(data.get("usage"))
        finish = FINISH_REASONS.get(str(data.get("finish_reason")), "stop")
        return (chat.completion(str(data.get("id") or "cohere"), target.model,
                                text if text or not tool_calls else None, tool_calls, finish,
                                usage, thinking=[reasoning.thinking_block(thoughts, "")]
                                if thoughts else None), usage)

    def stream_decoder(self, target: Target, *, include_usage: bool) -> CohereStreamDecoder:
        return CohereStreamDecoder(self.provider, target, include_usage=include_usage)

    def inputs_per_request(self, target: Target) -> int | None:
        return None  # one request carries every input

    def embeddings_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        upstream: dict[str, Any] = {
            "model": target.model, "texts": embedding.texts(body, "cohere"),
            # Cohere requires input_type; a route can set another one with `params`.
            "input_type": body.get("input_type") or "search_document",
            "embedding_types": ["float"]}
        if body.get("dimensions"):
            upstream["output_dimension"] = body["dimensions"]
        return UpstreamRequest("POST", self._embed_url, self._headers, orjson.dumps(upstream))

    def embeddings_response(self, payload: bytes, target: Target,
                            body: Mapping[str, Any]) -> tuple[bytes, Usage]:
        data = chat.load_object(payload, self.provider, target, "embeddings response")
        embeddings = data.get("embeddings")
        vectors = embeddings.get("float") if isinstance(embeddings, dict) else None
        if not isinstance(vectors, list):
            raise chat.malformed(self.provider, target, "response has no float embeddings")
        billed = (data.get("meta") or {}).get("billed_units") or {}
        tokens = billed.get("input_tokens") if isinstance(billed, dict) else None
        usage = Usage(prompt_tokens=int(tokens or 0), known=isinstance(tokens, int | float))
        return embedding.openai_list(vectors, body, target.model, usage, self.provider,
                                     target), usage

    def classify(self, status: int, headers: Mapping[str, str], payload: bytes,
                 target: Target) -> UpstreamError:
        return classify_error(self.provider, target, status, headers, payload)


def tool_args(arguments: Any) -> Any:
    """Cohere sends arguments as a JSON string; keep the object so it re-encodes cleanly."""
    if isinstance(arguments, str):
        try:
            return orjson.loads(arguments)
        except orjson.JSONDecodeError:
            return arguments
    return arguments or {}


def cohere_body(body: Mapping[str, Any], model: str, *, stream: bool) -> dict[str, Any]:
    chat.reject_unsupported(body, "cohere")
    upstream: dict[str, Any] = {"model": model, "messages": convert_messages(body["messages"])}
    upstream.update({_PARAMS[k]: body[k] for k in _PARAMS if body.get(k) is not None})
    if chat.max_tokens(body):
        upstream["max_tokens"] = chat.max_tokens(body)
    budget = reasoning.requested_budget(body)
    if budget is not None:  # reasoning models (command-a-reasoning)
        upstream["thinking"] = {"type": "enabled", "token_budget": budget} if budget else \
            {"type": "disabled"}
    stop = chat.stop_list(body)
    if stop:
        upstream["stop_sequences"] = stop
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_object":
        upstream["response_format"] = {"type": "json_object"}
    elif isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        schema = response_format.get("json_schema") or {}
        upstream["response_format"] = {"type": "json_object",
                                       "json_schema": schema.get("schema") or {}}
    functions = chat.function_tools(body)
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        # Cohere cannot force one named tool; offering only that tool, required, can.
        name = choice["function"].get("name")
        functions = [f for f in functions if f.get("name") == name]
        choice = "required"
    if functions:
        upstream["tools"] = [{"type": "function", "function": f} for f in functions]
    if choice in ("required", "none"):
        upstream["tool_choice"] = str(choice).upper()
    elif choice not in (None, "auto"):
        raise BadRequest("'tool_choice' must be auto, none, required or a function",
                         param="tool_choice", code="invalid_type")
    if stream:
        upstream["stream"] = True
    return upstream


def convert_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        role, where = message["role"], f"messages[{i}].content"
        if role in ("system", "developer"):
            out.append({"role": "system", "content": chat.text_of(message.get("content"),
                                                                 where)})
        elif role == "user":
            content = message.get("content")
            if not isinstance(content, (str, list)):
                raise BadRequest(f"{where} must be a string or an array of parts",
                                 param=where, code="invalid_type")
            out.append({"role": "user", "content": content})
        elif role == "assistant":
            turn: dict[str, Any] = {"role": "assistant"}
            text = chat.text_of(message.get("content"), where)
            if text:
                turn["content"] = text
            if message.get("tool_calls"):
                turn["tool_calls"] = message["tool_calls"]
            out.append(turn)
        elif role == "tool":
            out.append({"role": "tool", "tool_call_id": str(message.get("tool_call_id", "")),
                        "content": chat.text_of(message.get("content"), where)})
        else:
            raise BadRequest(f"messages[{i}].role {role!r} is not supported by provider "
                             "cohere", param=f"messages[{i}].role", code="invalid_value")
    return out


def usage_of(raw: Any) -> Usage:
    if not isinstance(raw, Mapping):
        return Usage()
    tokens = raw.get("tokens") or raw.get("billed_units") or {}
    if not isinstance(tokens, Mapping):
        return Usage()
    return Usage(prompt_tokens=int(tokens.get("input_tokens") or 0),
                 completion_tokens=int(tokens.get("output_tokens") or 0),
                 cached_tokens=int(raw.get("cached_tokens") or 0), known=True)


def _message_delta(data: Mapping[str, Any]) -> dict[str, Any]:
    delta = data.get("delta")
    message = delta.get("message") if isinstance(delta, dict) else None
    return message if isinstance(message, dict) else {}


class CohereStreamDecoder(chat.StreamDecoding):
    """One v2 chat stream -> OpenAI chunks; complete once message-end has arrived."""

    def __init__(self, provider: Provider, target: Target, *, include_usage: bool) -> None:
        super().__init__(provider, target, "cohere", include_usage=include_usage)

    def feed(self, event: Event) -> StreamItem:
        if event.data == "[DONE]":  # Cohere's trailer after message-end: nothing to say
            return StreamItem()
        data = chat.load_object(event.data, self._provider, self._target, "stream event")
        kind = data.get("type")
        if kind == "message-start":
            self._writer.id = str(data.get("id") or "cohere")
            return StreamItem(self._writer.delta({"role": "assistant", "content": ""}))
        if kind == "content-delta":
            content = _message_delta(data).get("content")
            if not isinstance(content, dict):
                raise self._malformed("content-delta has no content")
            if "thinking" in content:
                return StreamItem(self._writer.delta(reasoning.text_delta(
                    str(content["thinking"]))))
            return StreamItem(self._writer.delta({"content": str(content.get("text", ""))}))
        if kind in ("tool-call-start", "tool-call-delta"):
            return self._tool_call(data, start=kind == "tool-call-start")
        if kind == "message-end":
            return self._end(data)
        if kind is None and "message" in data:  # an error object instead of an event
            raise classify_error(self._provider, self._target, 500, {}, event.data.encode(),
                                 in_stream=True)
        return StreamItem()  # content-start/end, tool-plan-delta, citations, tool-call-end

    def _tool_call(self, data: Mapping[str, Any], *, start: bool) -> StreamItem:
        call = _message_delta(data).get("tool_calls")
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(call, dict) or not isinstance(function, dict):
            raise self._malformed("tool call event has no function")
        entry: dict[str, Any] = {"index": int(data.get("index") or 0)}
        if start:
            entry.update(id=str(call.get("id")), type="function")
            entry["function"] = {"name": str(function.get("name")),
                                 "arguments": str(function.get("arguments") or "")}
        else:
            entry["function"] = {"arguments": str(function.get("arguments") or "")}
        return StreamItem(self._writer.delta({"tool_calls": [entry]}))

    def _end(self, data: Mapping[str, Any]) -> StreamItem:
        delta = data.get("delta")
        delta = delta if isinstance(delta, dict) else {}
        reason = str(delta.get("finish_reason"))
        if reason == "ERROR":
            raise UpstreamError("serverError", f"{self._provider.name}: in stream: the "
                                "generation ended with an error", provider=self._provider.name,
                                model=self._target.model)
        if reason == "TIMEOUT":
            raise UpstreamError("timeout", f"{self._provider.name}: in stream: generation "
                                "timed out", provider=self._provider.name,
                                model=self._target.model)
        self._usage = usage_of(delta.get("usage"))
        self._done = True
        return StreamItem(self._writer.delta({}, FINISH_REASONS.get(reason, "stop"))
                          + self._writer.end(self._usage), usage=self._usage, done=True)


def classify_error(provider: Provider, target: Target, status: int,
                   headers: Mapping[str, str], payload: bytes, *,
                   in_stream: bool = False) -> UpstreamError:
    body = chat.json_or_none(payload)
    _, message = chat.error_fields(body, status, key=None)
    lowered = message.lower()
    if status in (401, 402, 403, 498):  # 498: invalid token, 402: billing
        error_class = "auth"
    elif status == 429:
        error_class = "rateLimit"
    elif any(h in lowered for h in _FILTER_HINTS):
        error_class = "contentFilter"
    elif any(h in lowered for h in _CONTEXT_HINTS):
        error_class = "contextWindow"
    else:
        error_class = chat.classify_status(status, in_stream=in_stream)
    return chat.upstream_error(provider, target, error_class, status, headers, message, body,
                               in_stream=in_stream, field=chat.blamed_field(message))
