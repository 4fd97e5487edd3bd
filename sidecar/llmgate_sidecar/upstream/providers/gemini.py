"""Gemini `generateContent` / `streamGenerateContent?alt=sse` <-> OpenAI chat completions.

Requests: roles become user/model, system messages `systemInstruction`, images
`inlineData`/`fileData`, tools `functionDeclarations`, tool results `functionResponse`
(named by looking the tool_call_id up in earlier assistant turns), `reasoning_effort` /
`thinking` a `thinkingConfig` budget. Responses and SSE chunks become OpenAI completions and
chunks, thought parts `reasoning_content`, a function call's `thoughtSignature` the tool
call's `extra_content.google.thought_signature`, a text part's the message's (or stream
delta's) `extra_content.google.thought_signature` (and both back, from the client's
history); a prompt blocked by safety is a `contentFilter` error. The API key goes in
`x-goog-api-key`. `vertex.py` reuses all of this for Vertex AI.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson
from llmgate_contract.config import Provider, Target
from llmgate_contract.providers import KINDS

from llmgate_sidecar.errors import BadRequest, UpstreamError
from llmgate_sidecar.upstream.providers import chat, embedding, reasoning
from llmgate_sidecar.upstream.providers.base import (
    Credentials,
    EmbeddingsAdapter,
    PassthroughAdapter,
    StreamDecoder,
    StreamItem,
    TokenCounter,
    UpstreamRequest,
    Usage,
)
from llmgate_sidecar.wire.sse import Event

FINISH_REASONS = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter",
                  "RECITATION": "content_filter", "BLOCKLIST": "content_filter",
                  "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
                  "IMAGE_SAFETY": "content_filter"}
_CONFIG = {"temperature": "temperature", "top_p": "topP", "top_k": "topK", "seed": "seed",
           "presence_penalty": "presencePenalty", "frequency_penalty": "frequencyPenalty"}
_CONTEXT_HINTS = ("exceeds the maximum number of tokens", "input token count",
                  "context window")


class GeminiAdapter:
    def __init__(self, provider: Provider, credentials: Credentials) -> None:
        self.provider = provider
        row = KINDS[provider.kind]
        self._base = (provider.base_url or row.default_base_url or "").rstrip("/")
        self._headers = {"content-type": "application/json", **provider.headers}
        if credentials.api_key:
            self._headers["x-goog-api-key"] = credentials.api_key
        self.embeddings: EmbeddingsAdapter | None = self if row.embeddings else None
        self.passthrough: PassthroughAdapter | None = None
        self.counter: TokenCounter | None = None  # count_tokens: estimated

    async def prepare(self) -> None:
        """Nothing to fetch before translating."""

    def model_url(self, model: str) -> str:
        return f"{self._base}/models/{quote(model, safe='')}"

    def headers(self) -> Mapping[str, str]:
        return self._headers

    def chat_request(self, body: dict[str, Any], target: Target, *,
                     stream: bool) -> UpstreamRequest:
        method = ":streamGenerateContent?alt=sse" if stream else ":generateContent"
        return UpstreamRequest("POST", self.model_url(target.model) + method, self.headers(),
                               orjson.dumps(gemini_body(body, self.provider.kind)))

    def chat_response(self, payload: bytes, target: Target) -> tuple[bytes, Usage]:
        data = chat.load_object(payload, self.provider, target, "response")
        candidate = first_candidate(data, self.provider, target)
        text, calls = parts_of(candidate, self.provider, target)
        usage = usage_of(data.get("usageMetadata"))
        finish = finish_reason(candidate, calls)
        thoughts = thoughts_of(candidate)
        signature = text_signature(candidate)
        return (chat.completion(str(data.get("responseId") or "gemini"),
                                str(data.get("modelVersion") or target.model),
                                text if text or not calls else None, calls, finish, usage,
                                thinking=[reasoning.thinking_block(thoughts, "")]
                                if thoughts else None,
                                extra={"extra_content": signed(signature)} if signature
                                else None),
                usage)

    def stream_decoder(self, target: Target, *, include_usage: bool) -> StreamDecoder:
        return GeminiStreamDecoder(self.provider, target, include_usage=include_usage)

    def inputs_per_request(self, target: Target) -> int | None:
        return None  # one request carries every input

    def embeddings_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        model = f"models/{target.model.removeprefix('models/')}"
        extra = output_dimensionality(body)
        requests = [{"model": model, "content": {"parts": [{"text": text}]}, **extra}
                    for text in embedding.texts(body, self.provider.kind)]
        return UpstreamRequest("POST", self.model_url(target.model) + ":batchEmbedContents",
                               self.headers(), orjson.dumps({"requests": requests}))

    def embeddings_response(self, payload: bytes, target: Target,
                            body: Mapping[str, Any]) -> tuple[bytes, Usage]:
        _, items = embedding.answer_list(payload, self.provider, target, "embeddings")
        vectors = [item.get("values") if isinstance(item, dict) else None for item in items]
        # batchEmbedContents reports no token counts: usage stays unknown (not zero).
        usage = Usage()
        return embedding.openai_list(vectors, body, target.model, usage, self.provider,
                                     target), usage

    def classify(self, status: int, headers: Mapping[str, str], payload: bytes,
                 target: Target) -> UpstreamError:
        return classify_error(self.provider, target, status, headers, payload)


def output_dimensionality(body: Mapping[str, Any]) -> dict[str, Any]:
    """An embeddings request's `dimensions` as Google's embedding parameter (Gemini and
    Vertex), or nothing."""
    return {"outputDimensionality": body["dimensions"]} if body.get("dimensions") else {}


def gemini_body(body: Mapping[str, Any], kind: str) -> dict[str, Any]:
    chat.reject_unsupported(body, kind)
    system, contents = convert_messages(body["messages"], kind)
    upstream: dict[str, Any] = {"contents": contents}
    if system:
        upstream["systemInstruction"] = {"parts": [{"text": system}]}
    config = {_CONFIG[k]: body[k] for k in _CONFIG if body.get(k) is not None}
    if chat.max_tokens(body):
        config["maxOutputTokens"] = chat.max_tokens(body)
    stop = chat.stop_list(body)
    if stop:
        config["stopSequences"] = stop
    config.update(response_format(body.get("response_format")))
    thinking = reasoning.gemini_config(body)
    if thinking is not None:
        config["thinkingConfig"] = thinking
    if config:
        upstream["generationConfig"] = config
    functions = chat.function_tools(body)
    if functions:
        upstream["tools"] = [{"functionDeclarations": [
            {k: f[k] for k in ("name", "description", "parameters") if f.get(k)}
            for f in functions]}]
    choice = body.get("tool_choice")
    if choice is not None:
        upstream["toolConfig"] = {"functionCallingConfig": tool_config(choice)}
    return upstream


def response_format(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or value.get("type") in (None, "text"):
        return {}
    if value.get("type") == "json_object":
        return {"responseMimeType": "application/json"}
    schema = value.get("json_schema")
    if value.get("type") == "json_schema" and isinstance(schema, dict):
        return {"responseMimeType": "application/json",
                "responseJsonSchema": schema.get("schema") or {}}
    raise BadRequest("'response_format' must be text, json_object or json_schema",
                     param="response_format", code="invalid_value")


def tool_config(choice: Any) -> dict[str, Any]:
    if choice in ("auto", "none"):
        return {"mode": choice.upper()}
    if choice == "required":
        return {"mode": "ANY"}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return {"mode": "ANY", "allowedFunctionNames": [choice["function"].get("name")]}
    raise BadRequest("'tool_choice' must be auto, none, required or a function",
                     param="tool_choice", code="invalid_type")


def convert_messages(messages: list[dict[str, Any]],
                     kind: str) -> tuple[str, list[dict[str, Any]]]:
    """(system text, Gemini contents); consecutive same-role turns are merged."""
    names: dict[str, str] = {}  # tool_call_id -> function name, for functionResponse

    def tool_result(call_id: str, text: str) -> dict[str, Any]:
        return {"functionResponse": {"name": names.get(call_id, call_id),
                                     "response": tool_response(text)}}
    system, contents = chat.turns(
        messages, kind, user=lambda content, i: user_parts(content, i, kind),
        assistant=lambda message, i: model_parts(message, i, names),
        tool_result=tool_result, model_role="model", parts="parts")
    return "\n\n".join(system), contents


def tool_response(text: str) -> dict[str, Any]:
    """Gemini wants an object: a JSON object result as is, anything else wrapped."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    return value if isinstance(value, dict) else {"content": text}


def user_parts(content: Any, i: int, kind: str) -> list[dict[str, Any]]:
    def image(url: str | None) -> dict[str, Any]:
        inline = chat.data_url(url) if url is not None else None
        if inline:
            return {"inlineData": {"mimeType": inline[0], "data": inline[1]}}
        if not url:
            raise BadRequest(f"messages[{i}] has an image_url part without a url",
                             param=f"messages[{i}].content", code="invalid_image")
        return {"fileData": {"mimeType": "image/*", "fileUri": url}}
    return chat.user_content(content, i, kind, lambda text: {"text": text}, image)


def model_parts(message: Mapping[str, Any], i: int,
                names: dict[str, str]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    text = chat.text_of(message.get("content"), f"messages[{i}].content")
    signature = thought_signature(message)  # Gemini's, on its text part (maybe empty)
    if text or signature is not None:
        parts.append({"text": text} if signature is None
                     else {"text": text, "thoughtSignature": signature})
    raw = message.get("tool_calls") or []
    for call, sent in zip(chat.requested_calls(message, i), raw, strict=False):
        names[call.id] = call.name  # Gemini answers tool results by name, not by id
        part: dict[str, Any] = {"functionCall": {"name": call.name, "args": call.arguments}}
        signature = thought_signature(sent)
        if signature is not None:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def signed(signature: str) -> dict[str, Any]:
    """Where Google's own OpenAI compatibility puts a Gemini thought signature (the
    `extra_content` of a tool call, a message or a stream delta)."""
    return {"google": {"thought_signature": signature}}


def thought_signature(item: Any) -> str | None:
    """The Gemini thought signature a tool call or an assistant message carries back
    (`signed`), if any."""
    extra = item.get("extra_content") if isinstance(item, dict) else None
    google = extra.get("google") if isinstance(extra, dict) else None
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    return signature if isinstance(signature, str) else None


def first_candidate(data: Mapping[str, Any], provider: Provider,
                    target: Target) -> dict[str, Any]:
    candidates = data.get("candidates")
    if not candidates:
        feedback = data.get("promptFeedback")
        reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
        if reason:
            raise UpstreamError("contentFilter", f"{provider.name}: prompt blocked ({reason})",
                                status=400, provider=provider.name, model=target.model)
        raise chat.malformed(provider, target, "response has no candidates")
    if not isinstance(candidates, list) or not isinstance(candidates[0], dict):
        raise chat.malformed(provider, target, "candidates is not a list of objects")
    return candidates[0]


def parts_of(candidate: Mapping[str, Any], provider: Provider, target: Target,
             first_index: int = 0) -> tuple[str, list[dict[str, Any]]]:
    content = candidate.get("content") or {}
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list):
        if candidate.get("finishReason"):
            return "", []  # e.g. SAFETY: the candidate comes back without content
        raise chat.malformed(provider, target, "candidate has no content parts")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in parts:
        if not isinstance(part, dict):
            raise chat.malformed(provider, target, "content part is not an object")
        if "text" in part and not part.get("thought"):
            texts.append(str(part["text"]))
        elif isinstance(part.get("functionCall"), dict):
            call = part["functionCall"]
            call_id = str(call.get("id") or f"call_{first_index + len(calls)}")
            calls.append(chat.tool_call(call_id, str(call.get("name")), call.get("args") or {}))
            if isinstance(part.get("thoughtSignature"), str):
                calls[-1]["extra_content"] = signed(part["thoughtSignature"])
    return "".join(texts), calls


def text_signature(candidate: Mapping[str, Any]) -> str | None:
    """The thought signature on the candidate's answer text (Gemini 3 signs the last part
    of an answer without function calls, often an empty text part at the stream's end)."""
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    found = None
    for part in parts or []:
        if isinstance(part, dict) and "text" in part and not part.get("thought") \
                and isinstance(part.get("thoughtSignature"), str):
            found = part["thoughtSignature"]
    return found


def thoughts_of(candidate: Mapping[str, Any]) -> str:
    """The text of the candidate's thought parts (`"thought": true`), which Gemini sends
    when `thinkingConfig.includeThoughts` is set."""
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    return "".join(str(p.get("text", "")) for p in parts or []
                   if isinstance(p, dict) and p.get("thought"))


def finish_reason(candidate: Mapping[str, Any], calls: list[dict[str, Any]]) -> str:
    if calls:
        return "tool_calls"
    return FINISH_REASONS.get(str(candidate.get("finishReason")), "stop")


def usage_of(raw: Any) -> Usage:
    if not isinstance(raw, Mapping):
        return Usage()
    # Thinking tokens are billed as output, as OpenAI counts reasoning tokens.
    return Usage(prompt_tokens=int(raw.get("promptTokenCount") or 0),
                 completion_tokens=int(raw.get("candidatesTokenCount") or 0)
                 + int(raw.get("thoughtsTokenCount") or 0),
                 cached_tokens=int(raw.get("cachedContentTokenCount") or 0), known=True)


class GeminiStreamDecoder(chat.StreamDecoding):
    """Each SSE event is a whole GenerateContentResponse; the stream has no end marker, so
    it is complete (`_done`) once a candidate carried a finishReason."""

    def __init__(self, provider: Provider, target: Target, *, include_usage: bool) -> None:
        super().__init__(provider, target, "gemini", include_usage=include_usage)
        self._started = False
        self._calls = 0

    def feed(self, event: Event) -> StreamItem:
        data = chat.load_object(event.data, self._provider, self._target, "stream event")
        if "error" in data:
            raise classify_error(self._provider, self._target, 500, {}, event.data.encode(),
                                 in_stream=True)
        if data.get("usageMetadata"):
            self._usage = usage_of(data["usageMetadata"])
            if not data.get("candidates") and not data.get("promptFeedback"):
                return StreamItem()  # a usage-only chunk: nothing for the client yet
        candidate = first_candidate(data, self._provider, self._target)
        text, calls = parts_of(candidate, self._provider, self._target, self._calls)
        delta: dict[str, Any] = {}
        if not self._started:
            self._started = True
            self._writer.id = str(data.get("responseId") or "gemini")
            self._writer.model = str(data.get("modelVersion") or self._target.model)
            delta["role"] = "assistant"
        thoughts = thoughts_of(candidate)
        if thoughts:
            delta.update(reasoning.text_delta(thoughts))
        if text or not (calls or thoughts):
            delta["content"] = text
        signature = text_signature(candidate)
        if signature is not None:
            delta["extra_content"] = signed(signature)
        if calls:
            delta["tool_calls"] = [{"index": self._calls + n, **call}
                                   for n, call in enumerate(calls)]
            self._calls += len(calls)
        finish = None
        if candidate.get("finishReason"):
            self._done = True
            finish = "tool_calls" if self._calls else finish_reason(candidate, [])
        return StreamItem(self._writer.delta(delta, finish))

    def finish(self) -> StreamItem:
        super().finish()  # cut short: raises
        return StreamItem(self._writer.end(self._usage), usage=self._usage, done=True)


def classify_error(provider: Provider, target: Target, status: int,
                   headers: Mapping[str, str], payload: bytes, *,
                   in_stream: bool = False) -> UpstreamError:
    body = chat.json_or_none(payload)
    if isinstance(body, list) and body:  # some Google front ends wrap the error in a list
        body = body[0]
    error, message = chat.error_fields(body, status)
    state, reasons, delay = str(error.get("status") or ""), set(), None
    fields: list[str] = []
    for detail in error.get("details") or []:
        if isinstance(detail, dict):
            reasons.add(str(detail.get("reason") or ""))
            delay = delay or detail.get("retryDelay")
            fields.extend(str(v.get("field", "")) for v in
                          detail.get("fieldViolations") or [] if isinstance(v, dict))
    if "API_KEY_INVALID" in reasons or state in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        error_class = "auth"
    elif state == "RESOURCE_EXHAUSTED":
        error_class = "rateLimit"
    elif any(h in message.lower() for h in _CONTEXT_HINTS):
        error_class = "contextWindow"
    elif state == "DEADLINE_EXCEEDED":
        error_class = "timeout"
    elif state in ("INTERNAL", "UNAVAILABLE"):
        error_class = "serverError"
    else:  # NOT_FOUND (an unknown model) is a 404: badRequest, model_not_found
        error_class = chat.classify_status(status, in_stream=in_stream)
    field = next((f for f in fields if chat.openai_param(f)), None) or chat.blamed_field(message)
    result = chat.upstream_error(provider, target, error_class, status, headers, message,
                                 body, in_stream=in_stream, field=field)
    if result.retry_after is None and isinstance(delay, str) and delay.endswith("s"):
        try:  # google.rpc.RetryInfo: "20s", "0.5s"
            result.retry_after = float(delay[:-1])
        except ValueError:
            pass
    return result
