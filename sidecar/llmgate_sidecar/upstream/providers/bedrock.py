"""Amazon Bedrock Converse / ConverseStream <-> OpenAI chat completions, SigV4-signed.

Requests become Converse bodies (system blocks, text/image/toolUse/toolResult content,
`inferenceConfig`, `toolConfig`; thinking as Claude's `additionalModelRequestFields.thinking`,
signed `thinking_blocks` as `reasoningContent`) at `/model/{modelId}/converse[-stream]` in
`Provider.aws_region`, signed with the keys in `Credentials.extra`. ConverseStream arrives
as AWS event-stream frames, which the transport turns into `Event(data=<json>,
event=<:event-type>)`; this module translates them chunk by chunk. No I/O here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import orjson
from llmgate_contract.config import Provider, Target
from llmgate_contract.providers import KINDS
from yarl import URL

from llmgate_sidecar.errors import BadRequest, UpstreamError
from llmgate_sidecar.upstream.aws_identity import WebIdentity, WebIdentityError
from llmgate_sidecar.upstream.providers import bedrock_embeddings, chat, reasoning
from llmgate_sidecar.upstream.providers.anthropic import DEFAULT_MAX_TOKENS
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
from llmgate_sidecar.upstream.sigv4 import AwsCredentials, sign
from llmgate_sidecar.wire.sse import Event

FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                  "tool_use": "tool_calls", "guardrail_intervened": "content_filter",
                  "content_filtered": "content_filter"}
IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg",
                 "image/gif": "gif", "image/webp": "webp"}
_UNSUPPORTED = (*chat.ALWAYS_UNSUPPORTED, "presence_penalty", "frequency_penalty", "seed")
_ERROR_CLASSES = {"ThrottlingException": "rateLimit", "ServiceQuotaExceededException":
                  "rateLimit", "AccessDeniedException": "auth",
                  "UnrecognizedClientException": "auth", "ExpiredTokenException": "auth",
                  "InvalidSignatureException": "auth", "ModelTimeoutException": "timeout",
                  "InternalServerException": "serverError", "ModelErrorException":
                  "serverError", "ServiceUnavailableException": "serverError",
                  "ModelNotReadyException": "serverError",
                  "ModelStreamErrorException": "serverError"}
_CONTEXT_HINTS = ("too long", "too many input tokens", "context window", "context length")
_MODEL_HINT = "model identifier is invalid"
# The members of a Converse request that CountTokens' `converse` input takes.
_COUNTED = ("messages", "system", "toolConfig", "additionalModelRequestFields")


class BedrockAdapter:
    def __init__(self, provider: Provider, credentials: Credentials, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.provider = provider
        self._region = provider.aws_region or "us-east-1"
        self._base = (provider.base_url
                      or f"https://bedrock-runtime.{self._region}.amazonaws.com").rstrip("/")
        extra = credentials.extra
        key_id, secret = extra.get("aws-access-key-id"), extra.get("aws-secret-access-key")
        self._aws = (AwsCredentials(key_id.strip(), secret.strip(),
                                    (extra.get("aws-session-token") or "").strip() or None)
                     if key_id and secret else None)
        # No keys in spec.aws: the pod's own IAM role (EKS injects it into the environment).
        self._identity = (WebIdentity.from_environment(os.environ, self._region)
                          if self._aws is None else None)
        self._headers = {"content-type": "application/json", "accept": "application/json",
                         **provider.headers}
        self._clock = clock
        # Embeddings through InvokeModel (Titan, Cohere Embed); no other OpenAI paths.
        self.embeddings: EmbeddingsAdapter | None = self if KINDS[provider.kind].embeddings \
            else None
        self.passthrough: PassthroughAdapter | None = None
        self.counter: TokenCounter | None = self

    async def prepare(self) -> None:
        """Fetch (or reuse) the web identity's temporary credentials before signing."""
        if self._identity is None:
            return
        try:
            self._aws = await self._identity.credentials()
        except WebIdentityError as exc:
            raise UpstreamError("auth", f"{self.provider.name}: {exc}",
                                provider=self.provider.name) from None

    def chat_request(self, body: dict[str, Any], target: Target, *,
                     stream: bool) -> UpstreamRequest:
        payload = orjson.dumps(converse_body(body))
        return self._signed(target, "converse-stream" if stream else "converse", payload)

    # CountTokens refuses models and Regions without token counting (ValidationException):
    # the API layer then answers its estimate.
    estimate_when_refused = True

    def counts(self, target: Target) -> bool:
        return True  # which models count is Bedrock's to say (its refusal: the estimate)

    def count_tokens_request(self, request: CountInput, target: Target) -> UpstreamRequest:
        """CountTokens (`/model/{modelId}/count-tokens`) with the Converse input this
        adapter would send for the same Messages request: the count of what it would bill."""
        converse = converse_body(request.chat())
        counted = {k: converse[k] for k in _COUNTED if k in converse}
        return self._signed(target, "count-tokens",
                            orjson.dumps({"input": {"converse": counted}}))

    def count_tokens_response(self, payload: bytes, target: Target) -> int:
        return chat.count_in(payload, "inputTokens", self.provider, target)

    def inputs_per_request(self, target: Target) -> int | None:
        return bedrock_embeddings.inputs_per_request(target.model)

    def embeddings_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        payload = orjson.dumps(bedrock_embeddings.request_body(body, target.model))
        return self._signed(target, "invoke", payload)

    def embeddings_response(self, payload: bytes, target: Target,
                            body: Mapping[str, Any]) -> tuple[bytes, Usage]:
        return bedrock_embeddings.response(payload, target, body, self.provider)

    def _signed(self, target: Target, action: str, payload: bytes) -> UpstreamRequest:
        if self._aws is None:
            raise UpstreamError("auth", f"{self.provider.name}: no AWS credentials: set "
                                "access keys in spec.aws or run the pod with an IAM role "
                                "(AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE)",
                                provider=self.provider.name, model=target.model)
        # Sign the URL exactly as it goes on the wire: aiohttp (yarl) normalises the path
        # (e.g. `%3A` in model ids back to `:`), and AWS signs the path it receives.
        url = str(URL(f"{self._base}/model/{quote(target.model, safe='')}/{action}"))
        headers = sign("POST", url, self._headers, payload, credentials=self._aws,
                       region=self._region, service="bedrock", now=self._clock())
        return UpstreamRequest("POST", url, headers, payload)

    def chat_response(self, payload: bytes, target: Target) -> tuple[bytes, Usage]:
        data = chat.load_object(payload, self.provider, target, "response")
        output = data.get("output")
        message = output.get("message") if isinstance(output, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            raise chat.malformed(self.provider, target, "response has no output message")
        texts, calls, thinking = [], [], []
        for block in content:
            if not isinstance(block, dict):
                raise chat.malformed(self.provider, target, "content block is not an object")
            if "text" in block:
                texts.append(str(block["text"]))
            elif isinstance(block.get("toolUse"), dict):
                use = block["toolUse"]
                calls.append(chat.tool_call(str(use.get("toolUseId")), str(use.get("name")),
                                            use.get("input") or {}))
            elif isinstance(block.get("reasoningContent"), dict):
                thinking.append(thinking_of(block["reasoningContent"]))
        usage = usage_of(data.get("usage"))
        finish = FINISH_REASONS.get(str(data.get("stopReason")), "stop")
        return (chat.completion("bedrock", target.model, "".join(texts) if texts or not calls
                                else None, calls, finish, usage, thinking=thinking), usage)

    def stream_decoder(self, target: Target, *, include_usage: bool) -> BedrockStreamDecoder:
        return BedrockStreamDecoder(self.provider, target, include_usage=include_usage)

    def classify(self, status: int, headers: Mapping[str, str], payload: bytes,
                 target: Target) -> UpstreamError:
        kind = str(headers.get("x-amzn-errortype") or "").split(":")[0]
        return classify_error(self.provider, target, status, headers, payload, kind)


def converse_body(body: Mapping[str, Any]) -> dict[str, Any]:
    chat.reject_unsupported(body, "bedrock", _UNSUPPORTED)
    if isinstance(body.get("response_format"), dict) and body["response_format"].get(
            "type") not in (None, "text"):
        raise BadRequest("'response_format' other than text is not supported by provider "
                         "bedrock", param="response_format", code="unsupported_parameter")
    system, messages = convert_messages(body["messages"])
    upstream: dict[str, Any] = {"messages": messages}
    if system:
        upstream["system"] = [{"text": s} for s in system]
    config: dict[str, Any] = {}
    if chat.max_tokens(body):
        config["maxTokens"] = chat.max_tokens(body)
    for name, field in (("temperature", "temperature"), ("top_p", "topP")):
        if body.get(name) is not None:
            config[field] = body[name]
    stop = chat.stop_list(body)
    if stop:
        config["stopSequences"] = stop
    if config:
        upstream["inferenceConfig"] = config
    max_out = chat.max_tokens(body) or DEFAULT_MAX_TOKENS
    thinking = reasoning.anthropic_thinking(body, max_out)
    if thinking is not None:  # Claude's own field, through Converse's pass-through
        upstream["additionalModelRequestFields"] = {"thinking": thinking}
        upstream.setdefault("inferenceConfig", config)["maxTokens"] = max_out  # > the budget
    tools = [{"toolSpec": {"name": f["name"], "description": f.get("description") or f["name"],
                           "inputSchema": {"json": f.get("parameters")
                                           or {"type": "object", "properties": {}}}}}
             for f in chat.function_tools(body)]
    if tools:
        upstream["toolConfig"] = {"tools": tools}
        choice = tool_choice(body.get("tool_choice"))
        if choice:
            upstream["toolConfig"]["toolChoice"] = choice
    return upstream


def tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice in (None, "auto", "none"):
        return None if choice != "auto" else {"auto": {}}
    if choice == "required":
        return {"any": {}}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return {"tool": {"name": choice["function"].get("name")}}
    raise BadRequest("'tool_choice' must be auto, none, required or a function",
                     param="tool_choice", code="invalid_type")


def convert_messages(messages: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    return chat.turns(messages, "bedrock", user=user_blocks, assistant=assistant_blocks,
                      tool_result=_tool_result)


def _tool_result(call_id: str, text: str) -> dict[str, Any]:
    return {"toolResult": {"toolUseId": call_id, "content": [{"text": text}]}}


def user_blocks(content: Any, i: int) -> list[dict[str, Any]]:
    def image(url: str | None) -> dict[str, Any]:
        inline = chat.data_url(url) if url is not None else None
        if inline is None or inline[0] not in IMAGE_FORMATS:
            raise BadRequest(f"messages[{i}]: provider bedrock takes text parts and png, "
                             "jpeg, gif or webp images as base64 data URLs",
                             param=f"messages[{i}].content", code="unsupported_parameter")
        return {"image": {"format": IMAGE_FORMATS[inline[0]], "source": {"bytes": inline[1]}}}
    return chat.user_content(content, i, "bedrock", lambda text: {"text": text}, image)


def assistant_blocks(message: Mapping[str, Any], i: int) -> list[dict[str, Any]]:
    # Signed reasoning first, as Bedrock answered it (Claude requires it with tool use).
    blocks: list[dict[str, Any]] = [reasoning_block(b)
                                    for b in reasoning.history_blocks(message, i)]
    text = chat.text_of(message.get("content"), f"messages[{i}].content")
    if text:
        blocks.append({"text": text})
    blocks.extend({"toolUse": {"toolUseId": call.id, "name": call.name,
                               "input": call.arguments}}
                  for call in chat.requested_calls(message, i))
    return blocks


def thinking_of(content: Mapping[str, Any]) -> dict[str, Any]:
    """A Converse `reasoningContent` block as a thinking block (see `reasoning`)."""
    if "redactedContent" in content:
        return reasoning.redacted_block(str(content["redactedContent"]))
    text = content.get("reasoningText")
    text = text if isinstance(text, dict) else {}
    return reasoning.thinking_block(str(text.get("text", "")), str(text.get("signature", "")))


def reasoning_block(block: Mapping[str, Any]) -> dict[str, Any]:
    """A thinking block from the client's history as Converse `reasoningContent`."""
    if block["type"] == reasoning.REDACTED:
        return {"reasoningContent": {"redactedContent": block["data"]}}
    return {"reasoningContent": {"reasoningText": {"text": block["thinking"],
                                                   "signature": block["signature"]}}}


def usage_of(raw: Any) -> Usage:
    """Converse usage -> Usage. Cache writes by TTL come in `cacheDetails` (`[{ttl: "1h" |
    "5m", inputTokens}]`, empty without writes): the 1-hour ones are priced apart."""
    if not isinstance(raw, Mapping):
        return Usage()
    cache_read = int(raw.get("cacheReadInputTokens") or 0)
    by_ttl: dict[str, int] = {}
    for detail in raw.get("cacheDetails") or []:
        if isinstance(detail, Mapping) and isinstance(detail.get("inputTokens"), int):
            ttl = str(detail.get("ttl"))
            by_ttl[ttl] = by_ttl.get(ttl, 0) + detail["inputTokens"]
    cache_write = int(raw.get("cacheWriteInputTokens") or sum(by_ttl.values()))
    return Usage(prompt_tokens=int(raw.get("inputTokens") or 0) + cache_read + cache_write,
                 cache_write_tokens=cache_write, cache_write_1h_tokens=by_ttl.get("1h", 0),
                 completion_tokens=int(raw.get("outputTokens") or 0),
                 cached_tokens=cache_read, known=True)


class BedrockStreamDecoder(chat.StreamDecoding):
    """ConverseStream events -> OpenAI chunks; the usage chunk goes out on `metadata`."""

    def __init__(self, provider: Provider, target: Target, *, include_usage: bool) -> None:
        super().__init__(provider, target, "bedrock", include_usage=include_usage)
        self._tools: dict[int, int] = {}  # contentBlockIndex -> OpenAI tool_calls index
        self._stopped = False  # messageStop arrived; `_done`: the usage (metadata) too

    def feed(self, event: Event) -> StreamItem:
        kind = event.event
        if kind.startswith(("exception:", "error:")):
            return self._exception(kind.partition(":")[2], event.data)
        data = chat.load_object(event.data, self._provider, self._target, "stream event")
        if kind == "messageStart":
            return StreamItem(self._writer.delta({"role": "assistant", "content": ""}))
        if kind == "contentBlockStart":
            start = data.get("start")
            use = start.get("toolUse") if isinstance(start, dict) else None
            if not isinstance(use, dict):
                return StreamItem()
            index = self._tools[int(data.get("contentBlockIndex") or 0)] = len(self._tools)
            return StreamItem(self._writer.delta({"tool_calls": [{
                "index": index, "id": str(use.get("toolUseId")), "type": "function",
                "function": {"name": str(use.get("name")), "arguments": ""}}]}))
        if kind == "contentBlockDelta":
            return self._delta(data)
        if kind == "messageStop":
            self._stopped = True
            finish = FINISH_REASONS.get(str(data.get("stopReason")), "stop")
            return StreamItem(self._writer.delta({}, finish))
        if kind == "metadata":
            self._usage = usage_of(data.get("usage"))
            return self._end()
        return StreamItem()  # contentBlockStop, and event types added later

    def _delta(self, data: Mapping[str, Any]) -> StreamItem:
        delta = data.get("delta")
        if not isinstance(delta, dict):
            raise self._malformed("contentBlockDelta has no delta")
        if "text" in delta:
            return StreamItem(self._writer.delta({"content": str(delta["text"])}))
        thought = delta.get("reasoningContent")
        if isinstance(thought, dict):
            return StreamItem(self._writer.delta(reasoning_delta(thought)))
        use = delta.get("toolUse")
        if isinstance(use, dict):
            index = self._tools.get(int(data.get("contentBlockIndex") or 0))
            if index is None:
                raise self._malformed("toolUse delta for a block that is not a tool use")
            return StreamItem(self._writer.delta({"tool_calls": [{
                "index": index, "function": {"arguments": str(use.get("input", ""))}}]}))
        return StreamItem()  # delta types added later

    def _end(self) -> StreamItem:
        self._done = True
        return StreamItem(self._writer.end(self._usage), usage=self._usage, done=True)

    def _exception(self, kind: str, payload: str) -> StreamItem:
        raise classify_error(self._provider, self._target, 500, {}, payload.encode(), kind,
                             in_stream=True)

    def finish(self) -> StreamItem:
        if not self._stopped:
            raise chat.stream_ended_early(self._provider, self._target)
        # Bedrock sends metadata (usage) after messageStop; end cleanly even without it.
        return StreamItem(usage=self._usage) if self._done else self._end()


def reasoning_delta(thought: Mapping[str, Any]) -> dict[str, Any]:
    """A ConverseStream `reasoningContent` delta: text, the block's signature, or a
    redacted block."""
    if "signature" in thought:
        return reasoning.signature_delta(str(thought["signature"]))
    if "redactedContent" in thought:
        return reasoning.redacted_delta(str(thought["redactedContent"]))
    return reasoning.text_delta(str(thought.get("text", "")))


def classify_error(provider: Provider, target: Target, status: int,
                   headers: Mapping[str, str], payload: bytes, kind: str, *,
                   in_stream: bool = False) -> UpstreamError:
    body = chat.json_or_none(payload)
    _, message = chat.error_fields(body, status, key=None)
    kind = kind[:1].upper() + kind[1:]  # stream exceptions are camelCase
    error_class = _ERROR_CLASSES.get(kind)
    if error_class is None:
        if kind == "ValidationException" and any(h in message.lower() for h in _CONTEXT_HINTS):
            error_class = "contextWindow"
        elif status == 403:
            error_class = "auth"
        else:
            error_class = chat.classify_status(status, in_stream=in_stream)
    if kind == "ResourceNotFoundException" or (
            kind == "ValidationException" and _MODEL_HINT in message.lower()):
        # OpenAI answers an unknown model with 404 model_not_found; Bedrock with a 400.
        error_class, status = "badRequest", 404
    return chat.upstream_error(provider, target, error_class, status, headers, message, body,
                               in_stream=in_stream, field=chat.blamed_field(message))
