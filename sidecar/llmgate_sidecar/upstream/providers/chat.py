"""The OpenAI chat shapes that the non-OpenAI adapters build and read, written once.

Used by the Anthropic, Gemini, Cohere and Bedrock adapters: the `chat.completion` and
`chat.completion.chunk` envelopes, reading OpenAI message content (and folding it into
alternating upstream turns), rejecting request features an upstream cannot honour (a 400
naming the parameter), what every stream decoder keeps (`StreamDecoding`), and the generic
parts of error classification. Pure functions; no I/O and no provider-specific wire format.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from llmgate_contract.config import Provider, Target

from llmgate_sidecar.errors import BadRequest, UpstreamError
from llmgate_sidecar.upstream.providers import reasoning
from llmgate_sidecar.upstream.providers.base import StreamItem, Usage, retry_after_seconds
from llmgate_sidecar.wire.sse import DONE

# OpenAI parameters no translated upstream supports; each is a 400 when actually used.
ALWAYS_UNSUPPORTED = ("logprobs", "top_logprobs", "logit_bias")


def malformed(provider: Provider, target: Target, what: str) -> UpstreamError:
    return UpstreamError("malformed", f"{provider.name}: malformed upstream payload: {what}",
                         provider=provider.name, model=target.model)


def load_object(payload: bytes | str, provider: Provider, target: Target,
                what: str) -> dict[str, Any]:
    """Parse an upstream JSON object or raise a `malformed` error naming `what`."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise malformed(provider, target, f"{what} is not JSON") from None
    if not isinstance(data, dict):
        raise malformed(provider, target, f"{what} is not a JSON object")
    return data


def reject_unsupported(body: Mapping[str, Any], provider_kind: str,
                       names: Iterable[str] = ALWAYS_UNSUPPORTED) -> None:
    """400 for features the upstream cannot do, instead of silently answering differently."""
    n = body.get("n")
    if n is not None and n != 1:
        raise BadRequest(f"'n' other than 1 is not supported by provider {provider_kind}",
                         param="n", code="unsupported_parameter")
    for name in names:
        if body.get(name) not in (None, False, 0, {}):
            raise BadRequest(f"'{name}' is not supported by provider {provider_kind}",
                             param=name, code="unsupported_parameter")


def max_tokens(body: Mapping[str, Any]) -> int | None:
    value = body.get("max_completion_tokens") or body.get("max_tokens")
    return value if isinstance(value, int) else None


def stop_list(body: Mapping[str, Any]) -> list[str] | None:
    stop = body.get("stop")
    if stop is None:
        return None
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return list(stop)
    raise BadRequest("'stop' must be a string or an array of strings", param="stop",
                     code="invalid_type")


def text_of(content: Any, where: str) -> str:
    """OpenAI content (a string, or text parts) as plain text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise BadRequest(f"{where} may only contain text parts", param=where,
                                 code="invalid_type")
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise BadRequest(f"{where} must be a string or an array of parts", param=where,
                     code="invalid_type")


Blocks = list[dict[str, Any]]


def turns(messages: list[dict[str, Any]], provider_kind: str, *,
          user: Callable[[Any, int], Blocks], assistant: Callable[[Mapping[str, Any], int], Blocks],
          tool_result: Callable[[str, str], dict[str, Any]], model_role: str = "assistant",
          parts: str = "content") -> tuple[list[str], Blocks]:
    """(the non-empty system/developer texts, the upstream turns) for upstreams whose turns
    alternate between the user and the model: `messages[i]`'s content becomes
    `user(content, i)`, an assistant turn `assistant(message, i)` under `model_role`, a
    tool result the user-side block `tool_result(tool_call_id, text)`; consecutive turns of
    one upstream role (a tool result after a user message, ...) merge into one
    `{"role": r, parts: [...]}`. Any other role is a 400 naming it."""
    system: list[str] = []
    out: Blocks = []
    for i, message in enumerate(messages):
        role, where = message["role"], f"messages[{i}].content"
        if role in ("system", "developer"):
            system.append(text_of(message.get("content"), where))
            continue
        if role == "user":
            turn, blocks = "user", user(message.get("content"), i)
        elif role == "assistant":
            turn, blocks = model_role, assistant(message, i)
        elif role == "tool":
            turn, blocks = "user", [tool_result(str(message.get("tool_call_id", "")),
                                                text_of(message.get("content"), where))]
        else:
            raise BadRequest(f"messages[{i}].role {role!r} is not supported by provider "
                             f"{provider_kind}", param=f"messages[{i}].role",
                             code="invalid_value")
        if out and out[-1]["role"] == turn:
            out[-1][parts].extend(blocks)
        else:
            out.append({"role": turn, parts: blocks})
    return [s for s in system if s], out


def user_content(content: Any, i: int, provider_kind: str,
                 text: Callable[[str], dict[str, Any]],
                 image: Callable[[str | None], dict[str, Any]]) -> Blocks:
    """A user message's content as upstream blocks: a string is one `text(...)` block, text
    parts `text(...)`, image_url parts `image(url)` (None when the part names no URL
    string); any other part is a 400 naming the provider."""
    if isinstance(content, str):
        return [text(content)]
    if not isinstance(content, list):
        raise BadRequest(f"messages[{i}].content must be a string or an array of parts",
                         param=f"messages[{i}].content", code="invalid_type")
    blocks: Blocks = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks.append(text(str(part.get("text", ""))))
        elif kind == "image_url":
            found = part.get("image_url")
            url = found.get("url") if isinstance(found, dict) else found
            blocks.append(image(url if isinstance(url, str) else None))
        else:
            raise BadRequest(f"messages[{i}] has a {kind!r} part, which provider "
                             f"{provider_kind} does not take", param=f"messages[{i}].content",
                             code="unsupported_parameter")
    return blocks


def data_url(url: str) -> tuple[str, str] | None:
    """`data:<media type>;base64,<data>` -> (media type, base64 data); None for other URLs."""
    if not url.startswith("data:"):
        return None
    head, _, data = url[5:].partition(",")
    media_type, _, encoding = head.partition(";")
    if encoding != "base64" or not data:
        raise BadRequest("image data URLs must be base64 encoded", param="messages",
                         code="invalid_image")
    return media_type or "application/octet-stream", data


def tool_arguments(arguments: Any, where: str) -> dict[str, Any]:
    """A tool call's JSON-encoded `arguments` as the object other upstreams expect."""
    if isinstance(arguments, dict):
        return arguments
    if not arguments:
        return {}
    try:
        value = orjson.loads(arguments)
    except (orjson.JSONDecodeError, TypeError):
        raise BadRequest(f"{where} must be a JSON object", param=where,
                         code="invalid_tool_arguments") from None
    if not isinstance(value, dict):
        raise BadRequest(f"{where} must be a JSON object", param=where,
                         code="invalid_tool_arguments")
    return value


@dataclass(frozen=True, slots=True)
class RequestedCall:
    """One tool call of an assistant turn in the client's history, checked and decoded."""

    id: str
    name: str
    arguments: dict[str, Any]


def requested_calls(message: Mapping[str, Any], i: int) -> list[RequestedCall]:
    """The `tool_calls` of `messages[i]` (an OpenAI assistant turn), for translators that
    replay the history upstream; a call without a function or with non-object arguments is
    a 400 naming it."""
    calls = []
    for j, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise BadRequest(f"messages[{i}].tool_calls[{j}] has no function",
                             param=f"messages[{i}].tool_calls", code="invalid_type")
        calls.append(RequestedCall(
            str(call.get("id", "")), str(function.get("name", "")),
            tool_arguments(function.get("arguments"), f"messages[{i}].tool_calls[{j}].arguments")))
    return calls


def function_tools(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The `function` objects of the request's tools (name, description, parameters)."""
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise BadRequest("'tools' must be an array", param="tools", code="invalid_type")
    functions = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if (not isinstance(tool, dict) or tool.get("type") != "function"
                or not isinstance(function, dict) or not function.get("name")):
            raise BadRequest(f"tools[{i}] must be a function tool with a name",
                             param=f"tools[{i}]", code="invalid_type")
        functions.append(function)
    return functions


def tool_call(call_id: str, name: str, arguments: Any) -> dict[str, Any]:
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": orjson.dumps(arguments).decode()}}


def completion(response_id: str, model: str, text: str | None,
               tool_calls: list[dict[str, Any]], finish_reason: str, usage: Usage, *,
               thinking: list[dict[str, Any]] | None = None,
               extra: Mapping[str, Any] | None = None) -> bytes:
    """A `chat.completion`; `thinking`: the answer's reasoning blocks (see `reasoning`);
    `extra`: provider fields of the message (Gemini's `extra_content`)."""
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None,
                               **reasoning.message_fields(thinking or []), **(extra or {})}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return orjson.dumps({
        "id": response_id, "object": "chat.completion", "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": finish_reason}],
        "usage": usage.to_openai()})


class ChunkWriter:
    """Builds one stream's `chat.completion.chunk` SSE events with a stable id and time."""

    __slots__ = ("created", "id", "include_usage", "model")

    def __init__(self, response_id: str, model: str, *, include_usage: bool) -> None:
        self.id, self.model = response_id, model
        self.created = int(time.time())
        self.include_usage = include_usage

    def delta(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return b"data: " + orjson.dumps({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None,
                         "finish_reason": finish_reason}]}) + b"\n\n"

    def end(self, usage: Usage) -> bytes:
        """The usage chunk (only if the client asked for it) and `[DONE]`."""
        if not self.include_usage:
            return DONE
        return b"data: " + orjson.dumps({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "choices": [], "usage": usage.to_openai()}) + b"\n\n" + DONE


class StreamDecoding:
    """What every translating stream decoder keeps: the provider and target it reads for,
    the chunk writer (`response_id` until the upstream names its own), the usage so far,
    and whether the upstream's final event arrived (`finish` without it: the stream was
    cut short, a `connectionError`)."""

    def __init__(self, provider: Provider, target: Target, response_id: str, *,
                 include_usage: bool) -> None:
        self._provider, self._target = provider, target
        self._writer = ChunkWriter(response_id, target.model, include_usage=include_usage)
        self._usage = Usage()
        self._done = False

    def _malformed(self, what: str) -> UpstreamError:
        return malformed(self._provider, self._target, what)

    def finish(self) -> StreamItem:
        if not self._done:
            raise stream_ended_early(self._provider, self._target)
        return StreamItem(usage=self._usage)


def classify_status(status: int, *, in_stream: bool = False) -> str:
    """The error class an HTTP status means when the body says nothing more specific."""
    if status == 429:
        return "rateLimit"
    if status in (401, 403):
        return "auth"
    if status in (408, 504):
        return "timeout"
    if status >= 500 or in_stream:
        return "serverError"
    return "badRequest"


# Upstream request fields (snake_case, any provider) -> the OpenAI parameter they came from.
_PARAMS = {
    "model": "model", "model_id": "model", "modelid": "model",
    "messages": "messages", "contents": "messages", "system": "messages",
    "system_instruction": "messages", "prompt": "messages",
    "max_tokens": "max_tokens", "max_output_tokens": "max_tokens",
    "max_completion_tokens": "max_completion_tokens",
    "temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "p": "top_p",
    "k": "top_k", "stop": "stop", "stop_sequences": "stop", "seed": "seed",
    "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
    "tools": "tools", "tool_config": "tools", "tool_choice": "tool_choice",
    "response_format": "response_format", "response_schema": "response_format",
    "response_mime_type": "response_format", "candidate_count": "n", "n": "n",
    "thinking": "reasoning_effort", "thinking_config": "reasoning_effort",
    "thinking_budget": "reasoning_effort", "budget_tokens": "reasoning_effort",
}
_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")
_INDEX = re.compile(r"\[\d+\]|^\d+$")


def openai_param(path: str) -> str | None:
    """The OpenAI parameter an upstream field path names (`inferenceConfig.maxTokens`,
    `generation_config.max_output_tokens`, `messages.0.content`), or None: the innermost
    segment that is a known request field decides."""
    segments = [_CAMEL.sub(r"_\1", part).lower() for part in re.split(r"[.\s/]", path)]
    for segment in reversed(segments):
        name = _PARAMS.get(_INDEX.sub("", segment))
        if name is not None:
            return name
    return None


# Where providers name the field they reject: "max_tokens: ..." (Anthropic),
# "* GenerateContentRequest.generation_config.x: ..." (Gemini), "... at 'inferenceConfig.
# maxTokens' ..." (AWS validation), "invalid request: max_tokens ..." (Cohere).
_BLAMED = (re.compile(r"(?:^\W*|(?<=\s))(?:GenerateContentRequest\.)?([A-Za-z_][\w.\[\]]*):\s"),
           re.compile(r"\bat '([A-Za-z_][\w.\[\]]*)'"),
           re.compile(r"^invalid request: ([a-z_]+)\b"))


def blamed_field(message: str) -> str | None:
    """The request field an upstream error message names, as the provider spelt it; only
    names of request fields count (`openai_param` knows them), so prose never does."""
    for pattern in _BLAMED:
        for match in pattern.finditer(message):
            if openai_param(match.group(1)):
                return match.group(1)
    return None


def upstream_error(provider: Provider, target: Target, error_class: str, status: int,
                   headers: Mapping[str, str], message: str, body: Any, *,
                   in_stream: bool = False, field: str | None = None) -> UpstreamError:
    """A non-OpenAI upstream's error (`field`: the upstream request field the provider
    blamed, if it said; the client sees it as the OpenAI parameter it came from)."""
    where = "in stream" if in_stream else f"HTTP {status}"
    return UpstreamError(error_class, f"{provider.name}: {where}: {message[:500]}",
                         status=status, retry_after=retry_after_seconds(headers),
                         provider=provider.name, model=target.model,
                         body=body if isinstance(body, dict) else None,
                         param=openai_param(field) if field else None)


def stream_ended_early(provider: Provider, target: Target) -> UpstreamError:
    return UpstreamError("connectionError", f"{provider.name}: upstream stream ended before "
                         "its final event", provider=provider.name, model=target.model)


def count_in(payload: bytes, name: str, provider: Provider, target: Target) -> int:
    """The token count `name` of an upstream's count-tokens answer (a JSON object); a
    missing or non-integer count is a malformed answer."""
    count = load_object(payload, provider, target, "count_tokens answer").get(name)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise malformed(provider, target, f"count_tokens answered without {name}")
    return count


def error_fields(body: Any, status: int, key: str | None = "error",
                 ) -> tuple[Mapping[str, Any], str]:
    """(the error object of an upstream's parsed error body, found under `key` or the body
    itself when `key` is None, {} when there is none; its `message` (AWS: `Message`), else
    one naming the HTTP status)."""
    error = (body.get(key) if key is not None else body) if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {}
    message = error.get("message") or error.get("Message")
    return error, str(message or f"upstream returned HTTP {status}")


def json_or_none(payload: bytes) -> Any:
    try:
        return orjson.loads(payload) if payload else None
    except orjson.JSONDecodeError:
        return None
