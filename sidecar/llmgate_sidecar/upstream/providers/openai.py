"""OpenAI and the OpenAI-compatible family: the identity translation, with each quirk named.

The request goes upstream as the client sent it, with the target's model and
`stream_options.include_usage` forced on for streams so usage is always known. The stream is
forwarded event by event as the upstream wrote it (parsed only to learn usage and to catch
in-band errors), so this adapter adds no per-chunk re-serialisation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from llmgate_contract.config import Provider, Target
from llmgate_contract.providers import KINDS

from llmgate_sidecar.errors import UpstreamError
from llmgate_sidecar.upstream.providers import embedding, reasoning
from llmgate_sidecar.upstream.providers.base import (
    Credentials,
    EmbeddingsAdapter,
    PassthroughAdapter,
    StreamItem,
    TokenCounter,
    UpstreamRequest,
    Usage,
    retry_after_seconds,
)
from llmgate_sidecar.wire.sse import DONE, Event

_CONTEXT_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})
# Kinds whose API validates messages against OpenAI's own schema and answers 400 for a
# field it does not know ("Additional properties are not allowed"): history fields that
# llmgate adds for other providers are left out for them (`reasoning.STRICT_FIELDS`).
# Other OpenAI-compatible servers keep them: Google's own OpenAI endpoint, reached as
# `openai-compatible`, needs `extra_content` (Gemini's thought signatures) back.
STRICT_MESSAGE_KINDS = frozenset({"openai", "azure-openai"})


class OpenAIAdapter:
    def __init__(self, provider: Provider, credentials: Credentials) -> None:
        self.provider = provider
        row = KINDS[provider.kind]
        base = provider.base_url or row.default_base_url or ""
        self._chat_url = base.rstrip("/") + "/chat/completions"
        self._base = base.rstrip("/")
        self._embeddings_url = self._base + "/embeddings"
        headers = {"content-type": "application/json", **provider.headers}
        if credentials.api_key:
            headers["authorization"] = f"Bearer {credentials.api_key}"
        self._headers = headers
        self.operations = row.passthrough
        self.embeddings: EmbeddingsAdapter | None = self if row.embeddings else None
        self.passthrough: PassthroughAdapter | None = self if row.passthrough else None
        self.counter: TokenCounter | None = None  # count_tokens: estimated
        self._strict = provider.kind in STRICT_MESSAGE_KINDS

    async def prepare(self) -> None:
        """Nothing to fetch before translating."""

    def chat_request(self, body: dict[str, Any], target: Target, *,
                     stream: bool) -> UpstreamRequest:
        upstream = dict(reasoning.openai_fields(body, strict=self._strict))
        upstream["model"] = target.model
        if stream:
            options = upstream.get("stream_options")
            upstream["stream_options"] = {**(options if isinstance(options, dict) else {}),
                                          "include_usage": True}
        return UpstreamRequest("POST", self._chat_url, self._headers, orjson.dumps(upstream))

    def chat_response(self, payload: bytes, target: Target) -> tuple[bytes, Usage]:
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise _malformed(self.provider, target, "response is not JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise _malformed(self.provider, target, "response has no choices")
        return payload, Usage.from_openai(data.get("usage"))

    def stream_decoder(self, target: Target, *, include_usage: bool) -> OpenAIStreamDecoder:
        return OpenAIStreamDecoder(self.provider, target, include_usage=include_usage)

    def raw_request(self, operation: str, body: bytes, content_type: str,
                    target: Target) -> UpstreamRequest:
        """Another OpenAI path (`operation`, e.g. "audio/speech"), body forwarded as is."""
        return UpstreamRequest("POST", f"{self._base}/{operation}",
                               {**self._headers, "content-type": content_type}, body)

    def inputs_per_request(self, target: Target) -> int | None:
        return None  # one request carries every input

    def embeddings_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        return UpstreamRequest("POST", self._embeddings_url, self._headers,
                               orjson.dumps({**body, "model": target.model}))

    def embeddings_response(self, payload: bytes, target: Target,
                            body: Mapping[str, Any]) -> tuple[bytes, Usage]:
        return payload, embedding.openai_usage(payload, self.provider, target)

    def classify(self, status: int, headers: Mapping[str, str], payload: bytes,
                 target: Target) -> UpstreamError:
        return classify_openai_error(self.provider, target, status, headers, payload)


class OpenAIStreamDecoder:
    """Forwards OpenAI chunks; drops the usage-only chunk unless the client asked for it, and
    chunks with neither choices nor usage (Azure's prompt-filter chunk)."""

    __slots__ = ("_done", "_include_usage", "_provider", "_target", "_usage")

    def __init__(self, provider: Provider, target: Target, *, include_usage: bool) -> None:
        self._provider, self._target = provider, target
        self._include_usage = include_usage
        self._done = False
        self._usage: Usage | None = None

    def feed(self, event: Event) -> StreamItem:
        data = event.data
        if data == "[DONE]":
            self._done = True
            return StreamItem(DONE, usage=self._usage, done=True)
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise _malformed(self._provider, self._target, "stream event is not JSON") from None
        if not isinstance(chunk, dict):
            raise _malformed(self._provider, self._target, "stream event is not an object")
        if "error" in chunk or event.event == "error":
            raise classify_openai_error(self._provider, self._target, 500, {},
                                        data.encode(), in_stream=True)
        usage = chunk.get("usage")
        if not usage and not chunk.get("choices"):
            # Azure opens with a chunk of content-filter results: `object: ""`, empty id and
            # choices. It tells an OpenAI client nothing and strict ones reject it: dropped.
            return StreamItem()
        if usage:
            self._usage = Usage.from_openai(usage)
            if not self._include_usage:
                if not chunk.get("choices"):
                    return StreamItem(usage=self._usage)
                chunk["usage"] = None
                return StreamItem(b"data: " + orjson.dumps(chunk) + b"\n\n", usage=self._usage)
        return StreamItem(b"data: " + data.encode() + b"\n\n")

    def finish(self) -> StreamItem:
        if not self._done:
            raise UpstreamError("connectionError", "upstream stream ended before [DONE]",
                                provider=self._provider.name, model=self._target.model)
        return StreamItem(usage=self._usage)


def classify_openai_error(provider: Provider, target: Target, status: int,
                          headers: Mapping[str, str], payload: bytes, *,
                          in_stream: bool = False) -> UpstreamError:
    """Map an OpenAI-style error response onto the gateway's error classes, keeping the
    upstream's own `type`, `code` and `param` for the client (`UpstreamFailed` fills in
    from the class what the upstream left out, as some compatible servers do)."""
    message, code = f"upstream returned HTTP {status}", ""
    try:
        body = orjson.loads(payload) if payload else None
    except orjson.JSONDecodeError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(body, dict) and error is None and body.get("object") == "error":
        error = body  # vLLM and other servers put the error's fields at the top level
    if isinstance(error, dict):
        message = str(error.get("message") or message)[:500]
        code = str(error.get("code") or error.get("type") or "")
    elif isinstance(error, str):
        message = error[:500]
    if code in _CONTEXT_CODES or "context length" in message.lower():
        error_class = "contextWindow"
    elif code == "content_filter" or code == "content_policy_violation":
        error_class = "contentFilter"
    elif status == 429:
        error_class = "rateLimit"
    elif status in (401, 403):
        error_class = "auth"
    elif status == 408:
        error_class = "timeout"
    elif status >= 500 or in_stream:
        error_class = "serverError"
    else:
        error_class = "badRequest"
    where = "in stream" if in_stream else f"HTTP {status}"
    own = error if isinstance(error, dict) else {}
    code_out = _text(own.get("code"))
    if code_out and code_out.isdigit():  # Azure and some servers echo the HTTP status
        code_out = None
    return UpstreamError(error_class, f"{provider.name}: {where}: {message}", status=status,
                         retry_after=retry_after_seconds(headers), provider=provider.name,
                         model=target.model, body=body if isinstance(body, dict) else None,
                         error_type=_text(own.get("type")), code=code_out,
                         param=_text(own.get("param")))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _malformed(provider: Provider, target: Target, what: str) -> UpstreamError:
    return UpstreamError("malformed", f"{provider.name}: malformed upstream payload: {what}",
                         provider=provider.name, model=target.model)
