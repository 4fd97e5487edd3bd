"""Azure OpenAI: OpenAI's wire format behind a deployment URL, an api-version and `api-key`.

The deployment in the path is the target's `model`; `api-version` comes from the provider's
`spec.azure.apiVersion` (else `DEFAULT_API_VERSION`). Bodies, streams and errors are
OpenAI's, so decoding and classification are the OpenAI adapter's own (Azure's content
filter errors carry `code: content_filter`, which that classifier already maps).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson
from llmgate_contract.config import Provider, Target
from llmgate_contract.providers import KINDS

from llmgate_sidecar.errors import UpstreamError
from llmgate_sidecar.upstream.providers import embedding
from llmgate_sidecar.upstream.providers.base import (
    Credentials,
    EmbeddingsAdapter,
    PassthroughAdapter,
    TokenCounter,
    UpstreamRequest,
    Usage,
)
from llmgate_sidecar.upstream.providers.openai import (
    OpenAIAdapter,
    OpenAIStreamDecoder,
    classify_openai_error,
)

# The GA version that supports stream_options.include_usage and tools.
DEFAULT_API_VERSION = "2024-10-21"


class AzureOpenAIAdapter:
    def __init__(self, provider: Provider, credentials: Credentials) -> None:
        self.provider = provider
        base = (provider.base_url or "").rstrip("/")
        # Accept both the resource endpoint and one that already ends in /openai.
        self._base = base if base.endswith("/openai") else base + "/openai"
        self._api_version = provider.azure_api_version or DEFAULT_API_VERSION
        headers = {"content-type": "application/json", **provider.headers}
        if credentials.api_key:
            headers["api-key"] = credentials.api_key
        self._headers = headers
        # Bodies, responses and errors are OpenAI's: reuse that adapter's translation.
        self._openai = OpenAIAdapter(provider, Credentials())
        row = KINDS[provider.kind]
        self.operations = row.passthrough
        self.embeddings: EmbeddingsAdapter | None = self if row.embeddings else None
        self.passthrough: PassthroughAdapter | None = self if row.passthrough else None
        self.counter: TokenCounter | None = None  # count_tokens: estimated

    async def prepare(self) -> None:
        """Nothing to fetch before translating."""

    def url(self, deployment: str, operation: str = "chat/completions") -> str:
        return (f"{self._base}/deployments/{quote(deployment, safe='')}/{operation}"
                f"?api-version={quote(self._api_version, safe='')}")

    def chat_request(self, body: dict[str, Any], target: Target, *,
                     stream: bool) -> UpstreamRequest:
        request = self._openai.chat_request(body, target, stream=stream)
        return UpstreamRequest("POST", self.url(target.model), self._headers, request.body)

    def chat_response(self, payload: bytes, target: Target) -> tuple[bytes, Usage]:
        return self._openai.chat_response(payload, target)

    def stream_decoder(self, target: Target, *, include_usage: bool) -> OpenAIStreamDecoder:
        return OpenAIStreamDecoder(self.provider, target, include_usage=include_usage)

    def raw_request(self, operation: str, body: bytes, content_type: str,
                    target: Target) -> UpstreamRequest:
        return UpstreamRequest("POST", self.url(target.model, operation),
                               {**self._headers, "content-type": content_type}, body)

    def inputs_per_request(self, target: Target) -> int | None:
        return None  # one request carries every input

    def embeddings_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        # The deployment in the path picks the model; the body's `model` is not needed.
        return UpstreamRequest("POST", self.url(target.model, "embeddings"), self._headers,
                               orjson.dumps({k: v for k, v in body.items() if k != "model"}))

    def embeddings_response(self, payload: bytes, target: Target,
                            body: Mapping[str, Any]) -> tuple[bytes, Usage]:
        return payload, embedding.openai_usage(payload, self.provider, target)

    def classify(self, status: int, headers: Mapping[str, str], payload: bytes,
                 target: Target) -> UpstreamError:
        error = classify_openai_error(self.provider, target, status, headers, payload)
        if error.error_class == "badRequest" and _is_content_filter(payload):
            error.error_class = "contentFilter"
            error.code = "content_filter"
        if error.code == "DeploymentNotFound":  # the deployment is the model: OpenAI's code
            error.code, error.param = "model_not_found", "model"
        return error


def _is_content_filter(payload: bytes) -> bool:
    """Azure also reports filtering as `innererror.code: ResponsibleAIPolicyViolation`."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return False
    error = body.get("error") if isinstance(body, dict) else None
    inner = error.get("innererror") if isinstance(error, dict) else None
    return isinstance(inner, dict) and inner.get("code") == "ResponsibleAIPolicyViolation"
