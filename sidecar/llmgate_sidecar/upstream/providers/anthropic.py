"""Anthropic Messages API <-> OpenAI chat completions, both ways, stream included.

Requests: system/developer messages become `system`, content parts become content blocks
(text, images by data URL or URL), tool calls and tool results become `tool_use` /
`tool_result` blocks, and `max_tokens` (required upstream) comes from the request or
`DEFAULT_MAX_TOKENS`; `thinking` / `reasoning_effort` and the history's signed
`thinking_blocks` go up as Anthropic's own (see `reasoning`). Responses and SSE events
(message_start ... message_stop) become OpenAI completions and chunks one event at a time,
thinking as `reasoning_content` / `thinking_blocks`. Pure translation; routing does the I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from llmgate_contract.config import Provider, Target
from llmgate_contract.providers import KINDS

from llmgate_sidecar.errors import BadRequest, UpstreamError
from llmgate_sidecar.upstream.providers import chat, reasoning
from llmgate_sidecar.upstream.providers.base import (
    CountInput,
    Credentials,
    EmbeddingsAdapter,
    PassthroughAdapter,
    StreamItem,
    TokenCounter,
    UpstreamRequest,
    Usage,
)
from llmgate_sidecar.wire.sse import Event

API_VERSION = "2023-06-01"
# Anthropic requires max_tokens; a route can set it with `params`, else this applies.
DEFAULT_MAX_TOKENS = 4096
FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop",
                  "max_tokens": "length", "tool_use": "tool_calls",
                  "refusal": "content_filter", "model_context_window_exceeded": "length"}
_UNSUPPORTED = (*chat.ALWAYS_UNSUPPORTED, "presence_penalty", "frequency_penalty", "audio",
                "prediction")
_CONTEXT_HINTS = ("prompt is too long", "context limit", "context window", "too many tokens")


class AnthropicAdapter:
    def __init__(self, provider: Provider, credentials: Credentials) -> None:
        self.provider = provider
        base = (provider.base_url or KINDS[provider.kind].default_base_url or "").rstrip("/")
        self._url = base + ("/messages" if base.endswith("/v1") else "/v1/messages")
        headers = {"content-type": "application/json", "anthropic-version": API_VERSION,
                   **provider.headers}
        if credentials.api_key:
            headers["x-api-key"] = credentials.api_key
        self._headers = headers
        # No embeddings API, no other OpenAI paths.
        self.embeddings: EmbeddingsAdapter | None = None
        self.passthrough: PassthroughAdapter | None = None
        self.counter: TokenCounter | None = self

    async def prepare(self) -> None:
        """Nothing to fetch before translating."""

    # Anthropic's 400 on a count is about the request: the client sees it.
    estimate_when_refused = False

    def counts(self, target: Target) -> bool:
        return True

    def count_tokens_request(self, request: CountInput, target: Target) -> UpstreamRequest:
        """`POST /v1/messages/count_tokens`: the Anthropic Messages body as it came, for the
        target's model."""
        return UpstreamRequest("POST", self._url + "/count_tokens", self._headers,
                               orjson.dumps(count_body(request.messages, target.model)))

    def count_tokens_response(self, payload: bytes, target: Target) -> int:
        return chat.count_in(payload, "input_tokens", self.provider, target)

    def chat_request(self, body: dict[str, Any], target: Target, *,
                     stream: bool) -> UpstreamRequest:
        return UpstreamRequest("POST", self._url, self._headers,
                               orjson.dumps(messages_body(body, target.model, stream=stream)))

    def chat_response(self, payload: bytes, target: Target) -> tuple[bytes, Usage]:
        return answer(payload, self.provider, target)

    def stream_decoder(self, target: Target, *, include_usage: bool) -> AnthropicStreamDecoder:
        return AnthropicStreamDecoder(self.provider, target, include_usage=include_usage)

    def classify(self, status: int, headers: Mapping[str, str], payload: bytes,
                 target: Target) -> UpstreamError:
        return classify_error(self.provider, target, status, headers, payload)


def answer(payload: bytes, provider: Provider, target: Target) -> tuple[bytes, Usage]:
    """A Messages API answer (Anthropic's, Claude's on Vertex AI) -> (OpenAI completion,
    usage)."""
    data = chat.load_object(payload, provider, target, "response")
    content = data.get("content")
    if data.get("type") != "message" or not isinstance(content, list):
        raise chat.malformed(provider, target, "response is not a message")
    texts, calls, thinking = [], [], []
    for block in content:
        if not isinstance(block, dict):
            raise chat.malformed(provider, target, "content block is not an object")
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            calls.append(chat.tool_call(str(block.get("id")), str(block.get("name")),
                                        block.get("input") or {}))
        elif kind == reasoning.THINKING:
            thinking.append(reasoning.thinking_block(str(block.get("thinking", "")),
                                                     str(block.get("signature", ""))))
        elif kind == reasoning.REDACTED:
            thinking.append(reasoning.redacted_block(str(block.get("data", ""))))
    usage = usage_of(data.get("usage"))
    finish = FINISH_REASONS.get(str(data.get("stop_reason")), "stop")
    text = "".join(texts) if texts or not calls else None
    return (chat.completion(str(data.get("id", "msg")), str(data.get("model", target.model)),
                            text, calls, finish, usage, thinking=thinking), usage)


# What Anthropic's count_tokens accepts (it refuses other fields, e.g. max_tokens).
COUNT_FIELDS = ("messages", "system", "tools", "tool_choice", "thinking", "mcp_servers")


def count_body(body: Mapping[str, Any], model: str) -> dict[str, Any]:
    """A count_tokens request (Anthropic's, and Claude's on Vertex AI) for `model`: the
    client's Messages body, only the fields counting takes."""
    return {"model": model, **{k: body[k] for k in COUNT_FIELDS if body.get(k) is not None}}


def messages_body(body: Mapping[str, Any], model: str, *, stream: bool) -> dict[str, Any]:
    """The Messages API request for one OpenAI chat request."""
    chat.reject_unsupported(body, "anthropic", _UNSUPPORTED)
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") not in (None, "text"):
        raise BadRequest("'response_format' other than text is not supported by provider "
                         "anthropic", param="response_format", code="unsupported_parameter")
    system, messages = convert_messages(body["messages"])
    upstream: dict[str, Any] = {"model": model, "messages": messages,
                                "max_tokens": chat.max_tokens(body) or DEFAULT_MAX_TOKENS}
    if system:
        upstream["system"] = system
    thinking = reasoning.anthropic_thinking(body, upstream["max_tokens"])
    if thinking is not None:
        upstream["thinking"] = thinking
    for name in ("temperature", "top_p", "top_k"):
        if body.get(name) is not None:
            upstream[name] = body[name]
    stop = chat.stop_list(body)
    if stop:
        upstream["stop_sequences"] = stop
    if isinstance(body.get("user"), str):
        upstream["metadata"] = {"user_id": body["user"]}
    functions = chat.function_tools(body)
    if functions:
        upstream["tools"] = [{"name": f["name"], "description": f.get("description", ""),
                              "input_schema": f.get("parameters")
                              or {"type": "object", "properties": {}}} for f in functions]
    choice = tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice is not None:
        upstream["tool_choice"] = choice
    if stream:
        upstream["stream"] = True
    return upstream


def tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None and parallel is not False:
        return None
    result: dict[str, Any]
    if choice is None or choice == "auto":
        result = {"type": "auto"}
    elif choice == "required":
        result = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        result = {"type": "tool", "name": choice["function"].get("name")}
    else:
        raise BadRequest("'tool_choice' must be auto, none, required or a function",
                         param="tool_choice", code="invalid_type")
    if parallel is False:
        result["disable_parallel_tool_use"] = True
    return result


def convert_messages(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """(system text, Anthropic messages); consecutive same-role turns are merged."""
    system, out = chat.turns(messages, "anthropic", user=user_blocks,
                             assistant=assistant_blocks, tool_result=_tool_result)
    return "\n\n".join(system), out


def _tool_result(call_id: str, text: str) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": call_id, "content": text}


def user_blocks(content: Any, i: int) -> list[dict[str, Any]]:
    def image(url: str | None) -> dict[str, Any]:
        if url is None:
            raise BadRequest(f"messages[{i}] has an image_url part without a url",
                             param=f"messages[{i}].content", code="invalid_image")
        inline = chat.data_url(url)
        source = ({"type": "base64", "media_type": inline[0], "data": inline[1]} if inline
                  else {"type": "url", "url": url})
        return {"type": "image", "source": source}
    return chat.user_content(content, i, "anthropic", lambda text: {"type": "text",
                                                                    "text": text}, image)


def assistant_blocks(message: Mapping[str, Any], i: int) -> list[dict[str, Any]]:
    # Signed thinking first, as Anthropic answered it (required back with tool use).
    blocks: list[dict[str, Any]] = reasoning.history_blocks(message, i)
    text = chat.text_of(message.get("content"), f"messages[{i}].content")
    if text:
        blocks.append({"type": "text", "text": text})
    blocks.extend({"type": "tool_use", "id": call.id, "name": call.name,
                   "input": call.arguments} for call in chat.requested_calls(message, i))
    return blocks


def usage_of(raw: Any, base: Usage | None = None) -> Usage:
    """Anthropic usage -> Usage. With `base` (message_start's), only the counts `raw` has
    replace it: a stream's final message_delta carries output tokens and, from Anthropic and
    some compatible upstreams, the final input and cache counts too."""
    if not isinstance(raw, Mapping):
        return base or Usage()
    before = base or Usage()

    def count(name: str, default: int) -> int:
        value = raw.get(name)
        return int(value) if isinstance(value, int | float) else default

    cache_read = count("cache_read_input_tokens", before.cached_tokens)
    cache_write = count("cache_creation_input_tokens", before.cache_write_tokens)
    fresh = count("input_tokens",
                  before.prompt_tokens - before.cached_tokens - before.cache_write_tokens)
    creation = raw.get("cache_creation")
    hour = creation.get("ephemeral_1h_input_tokens") if isinstance(creation, Mapping) else None
    # OpenAI's prompt_tokens include cache reads and writes; Anthropic counts them apart.
    return Usage(prompt_tokens=fresh + cache_read + cache_write,
                 completion_tokens=count("output_tokens", before.completion_tokens),
                 cached_tokens=cache_read, cache_write_tokens=cache_write, known=True,
                 cache_write_1h_tokens=int(hour) if isinstance(hour, int | float)
                 else before.cache_write_1h_tokens)


class AnthropicStreamDecoder(chat.StreamDecoding):
    """One Messages stream -> OpenAI chunks; keeps only ids, tool indexes and usage."""

    def __init__(self, provider: Provider, target: Target, *, include_usage: bool) -> None:
        super().__init__(provider, target, "msg", include_usage=include_usage)
        self._tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool_calls index

    def feed(self, event: Event) -> StreamItem:
        data = chat.load_object(event.data, self._provider, self._target, "stream event")
        kind = data.get("type")
        if kind == "message_start":
            return self._start(data.get("message"))
        if kind == "content_block_start":
            return self._block_start(data)
        if kind == "content_block_delta":
            return self._block_delta(data)
        if kind == "message_delta":
            delta = data.get("delta")
            delta = delta if isinstance(delta, dict) else {}
            self._usage = usage_of(data.get("usage"), self._usage)
            finish = FINISH_REASONS.get(str(delta.get("stop_reason")), "stop")
            return StreamItem(self._writer.delta({}, finish))
        if kind == "message_stop":
            self._done = True
            return StreamItem(self._writer.end(self._usage), usage=self._usage, done=True)
        if kind == "error":
            raise classify_error(self._provider, self._target, 500, {},
                                 event.data.encode(), in_stream=True)
        return StreamItem()  # ping, content_block_stop, and event types added later

    def _start(self, message: Any) -> StreamItem:
        if not isinstance(message, dict):
            raise self._malformed("message_start has no message")
        self._writer.id = str(message.get("id", "msg"))
        self._writer.model = str(message.get("model") or self._target.model)
        self._usage = usage_of(message.get("usage"))
        return StreamItem(self._writer.delta({"role": "assistant", "content": ""}))

    def _block_start(self, data: dict[str, Any]) -> StreamItem:
        block = data.get("content_block")
        if not isinstance(block, dict):
            raise self._malformed("content_block_start has no content_block")
        if block.get("type") == "tool_use":
            index = self._tools[int(data.get("index", 0))] = len(self._tools)
            return StreamItem(self._writer.delta({"tool_calls": [{
                "index": index, "id": str(block.get("id")), "type": "function",
                "function": {"name": str(block.get("name")), "arguments": ""}}]}))
        if block.get("type") == "text" and block.get("text"):
            return StreamItem(self._writer.delta({"content": str(block["text"])}))
        if block.get("type") == reasoning.REDACTED:
            return StreamItem(self._writer.delta(reasoning.redacted_delta(
                str(block.get("data", "")))))
        if block.get("type") == reasoning.THINKING and block.get("thinking"):
            return StreamItem(self._writer.delta(reasoning.text_delta(str(block["thinking"]))))
        return StreamItem()

    def _block_delta(self, data: dict[str, Any]) -> StreamItem:
        delta = data.get("delta")
        if not isinstance(delta, dict):
            raise self._malformed("content_block_delta has no delta")
        if delta.get("type") == "text_delta":
            return StreamItem(self._writer.delta({"content": str(delta.get("text", ""))}))
        if delta.get("type") == "input_json_delta":
            index = self._tools.get(int(data.get("index", 0)))
            if index is None:
                raise self._malformed("input_json_delta for a block that is not a tool_use")
            return StreamItem(self._writer.delta({"tool_calls": [{
                "index": index, "function": {"arguments": str(delta.get("partial_json", ""))}}]}))
        if delta.get("type") == "thinking_delta":
            return StreamItem(self._writer.delta(reasoning.text_delta(
                str(delta.get("thinking", "")))))
        if delta.get("type") == "signature_delta":
            return StreamItem(self._writer.delta(reasoning.signature_delta(
                str(delta.get("signature", "")))))
        return StreamItem()  # citations and delta types added later


def classify_error(provider: Provider, target: Target, status: int,
                   headers: Mapping[str, str], payload: bytes, *,
                   in_stream: bool = False) -> UpstreamError:
    body = chat.json_or_none(payload)
    error, message = chat.error_fields(body, status)
    kind = str(error.get("type") or "")
    if kind == "overloaded_error" or status == 529:
        # 529 means what 503 means elsewhere: retriable with the default retry.onStatus.
        error_class, status = "serverError", 503
    elif kind == "rate_limit_error":
        error_class = "rateLimit"
    elif kind in ("authentication_error", "permission_error"):
        error_class = "auth"
    elif kind == "invalid_request_error" and any(h in message.lower() for h in _CONTEXT_HINTS):
        error_class = "contextWindow"
    elif kind == "api_error":
        error_class = "serverError"
    else:  # not_found_error is a 404 for the model: badRequest, model_not_found
        error_class = chat.classify_status(status, in_stream=in_stream)
    return chat.upstream_error(provider, target, error_class, status, headers, message, body,
                               in_stream=in_stream, field=chat.blamed_field(message))
