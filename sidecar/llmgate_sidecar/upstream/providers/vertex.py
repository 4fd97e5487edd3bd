"""Vertex AI: Google's Gemini models and Anthropic's Claude models at a project/location URL,
with an OAuth bearer token.

Gemini models speak the Gemini wire format (`publishers/google`). Claude models (`is_claude`:
Anthropic's publisher on Vertex, model ids `claude-…@…`) speak Anthropic's Messages API at
`publishers/anthropic/models/{model}:rawPredict` (`:streamRawPredict` for SSE), with the
Anthropic adapter's own translation both ways and two differences Vertex makes: no `model`
in the body (it is in the URL) and `anthropic_version: "vertex-2023-10-16"` in the body
instead of a header. Token counting (`/v1/messages/count_tokens`) for Claude goes to
`count-tokens:rawPredict` in Anthropic's count_tokens shape; Gemini models are estimated by
the API layer.

The token is minted with google-auth from the service-account key in
`Credentials.extra["gcp-service-account-key"]` (or Application Default Credentials, e.g.
GKE workload identity, when no key is given) inside `prepare()`, which routing awaits
before each request; it is refreshed only when google-auth says it is no longer valid.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson
from llmgate_contract.config import Provider, Target

from llmgate_sidecar.errors import UpstreamError
from llmgate_sidecar.upstream.providers import anthropic, chat, embedding
from llmgate_sidecar.upstream.providers.base import (
    CountInput,
    Credentials,
    StreamDecoder,
    TokenCounter,
    UpstreamRequest,
    Usage,
)
from llmgate_sidecar.upstream.providers.gemini import GeminiAdapter, output_dimensionality

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
CLAUDE_PREFIX = "claude-"  # Anthropic's models on Vertex (`claude-sonnet-4-5@20250929`)
# The Messages API version Vertex takes, in the body (Anthropic's "Claude on Vertex AI").
ANTHROPIC_VERSION = "vertex-2023-10-16"


def is_claude(model: str) -> bool:
    """Whether `model` is Anthropic's on Vertex (Messages API, rawPredict) or Google's."""
    return model.startswith(CLAUDE_PREFIX)


class VertexAIAdapter(GeminiAdapter):
    def __init__(self, provider: Provider, credentials: Credentials) -> None:
        super().__init__(provider, Credentials())
        location = provider.gcp_location or "us-central1"
        host = ("aiplatform.googleapis.com" if location == "global"
                else f"{location}-aiplatform.googleapis.com")
        base = provider.base_url or f"https://{host}/v1"
        root = f"{base.rstrip('/')}/projects/{provider.gcp_project}/locations/{location}"
        self._base = f"{root}/publishers/google"
        self._claude = f"{root}/publishers/anthropic/models"
        self._count_url = f"{self._claude}/count-tokens:rawPredict"
        self.counter: TokenCounter | None = self
        self._key = credentials.extra.get("gcp-service-account-key")
        self._google: Any = None
        self._lock = asyncio.Lock()

    async def prepare(self) -> None:
        if self._google is not None and self._google.valid:
            return
        async with self._lock:
            if self._google is not None and self._google.valid:
                return  # another request refreshed it while this one waited
            try:
                # google-auth's refresh is blocking HTTP: keep it off the event loop.
                self._google = await asyncio.to_thread(self._refreshed)
            except UpstreamError:
                raise
            except Exception as exc:
                raise self._token_error(exc) from None

    def _refreshed(self) -> Any:
        import google.auth
        import google.auth.transport.requests
        from google.oauth2 import service_account

        if self._key:
            try:
                info = orjson.loads(self._key)
            except orjson.JSONDecodeError:
                raise UpstreamError("auth", f"{self.provider.name}: the service-account key "
                                    "is not JSON", provider=self.provider.name) from None
            from_info: Any = service_account.Credentials.from_service_account_info
            google_credentials: Any = from_info(info, scopes=SCOPES)
        else:
            google_credentials, _ = google.auth.default(scopes=SCOPES)
        google_credentials.refresh(google.auth.transport.requests.Request())
        return google_credentials

    def chat_request(self, body: dict[str, Any], target: Target, *,
                     stream: bool) -> UpstreamRequest:
        if not is_claude(target.model):
            return super().chat_request(body, target, stream=stream)
        upstream = anthropic.messages_body(body, target.model, stream=stream)
        del upstream["model"]  # Vertex takes it from the URL
        upstream["anthropic_version"] = ANTHROPIC_VERSION
        method = "streamRawPredict" if stream else "rawPredict"
        return UpstreamRequest("POST", f"{self._claude}/{quote(target.model, safe='@')}:"
                               f"{method}", self.headers(), orjson.dumps(upstream))

    def chat_response(self, payload: bytes, target: Target) -> tuple[bytes, Usage]:
        if is_claude(target.model):
            return anthropic.answer(payload, self.provider, target)
        return super().chat_response(payload, target)

    def stream_decoder(self, target: Target, *, include_usage: bool) -> StreamDecoder:
        if is_claude(target.model):
            return anthropic.AnthropicStreamDecoder(self.provider, target,
                                                    include_usage=include_usage)
        return super().stream_decoder(target, include_usage=include_usage)

    def classify(self, status: int, headers: Mapping[str, str], payload: bytes,
                 target: Target) -> UpstreamError:
        """Claude's own errors come in Anthropic's shape (`"type": "error"`); what Vertex
        itself refuses (quota, permission, an unknown model) in Google's."""
        body = chat.json_or_none(payload)
        if is_claude(target.model) and isinstance(body, dict) and body.get("type") == "error":
            return anthropic.classify_error(self.provider, target, status, headers, payload)
        return super().classify(status, headers, payload, target)

    def embeddings_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        """Vertex embeds through the model's `:predict` (not Gemini's batchEmbedContents)."""
        instances = [{"content": text} for text in embedding.texts(body, self.provider.kind)]
        parameters = output_dimensionality(body)
        payload = {"instances": instances, **({"parameters": parameters} if parameters else {})}
        return UpstreamRequest("POST", self.model_url(target.model) + ":predict",
                               self.headers(), orjson.dumps(payload))

    def embeddings_response(self, payload: bytes, target: Target,
                            body: Mapping[str, Any]) -> tuple[bytes, Usage]:
        _, predictions = embedding.answer_list(payload, self.provider, target, "predictions")
        vectors, tokens = [], 0
        for item in predictions:
            found = item.get("embeddings") if isinstance(item, dict) else None
            vectors.append(found.get("values") if isinstance(found, dict) else None)
            stats = found.get("statistics") if isinstance(found, dict) else None
            count = stats.get("token_count") if isinstance(stats, dict) else None
            tokens += int(count) if isinstance(count, (int, float)) else 0
        usage = Usage(prompt_tokens=tokens, known=True)
        return embedding.openai_list(vectors, body, target.model, usage, self.provider,
                                     target), usage

    # Models or Regions without counting answer 400/404: the API layer then estimates.
    estimate_when_refused = True

    def counts(self, target: Target) -> bool:
        return is_claude(target.model)

    def count_tokens_request(self, request: CountInput, target: Target) -> UpstreamRequest:
        return UpstreamRequest("POST", self._count_url, self.headers(),
                               orjson.dumps(anthropic.count_body(request.messages, target.model)))

    def count_tokens_response(self, payload: bytes, target: Target) -> int:
        return chat.count_in(payload, "input_tokens", self.provider, target)

    def _token_error(self, exc: Exception) -> UpstreamError:
        from google.auth import exceptions

        # RefreshError: the token endpoint refused us; TransportError: it was unreachable.
        error_class = ("connectionError" if isinstance(exc, exceptions.TransportError)
                       else "auth")
        return UpstreamError(error_class, f"{self.provider.name}: could not get a Google "
                             f"access token ({type(exc).__name__})", provider=self.provider.name)

    def headers(self) -> Mapping[str, str]:
        if self._google is None or not self._google.token:
            return self._headers
        return {**self._headers, "authorization": f"Bearer {self._google.token}"}

    def model_url(self, model: str) -> str:
        return f"{self._base}/models/{model}"
