"""Provider adapters by kind. `adapter_for` is the only place that maps a kind to a class."""

from __future__ import annotations

from llmgate_contract.config import Provider

from llmgate_sidecar.upstream.providers.anthropic import AnthropicAdapter
from llmgate_sidecar.upstream.providers.azure import AzureOpenAIAdapter
from llmgate_sidecar.upstream.providers.base import Adapter, Credentials
from llmgate_sidecar.upstream.providers.bedrock import BedrockAdapter
from llmgate_sidecar.upstream.providers.cohere import CohereAdapter
from llmgate_sidecar.upstream.providers.gemini import GeminiAdapter
from llmgate_sidecar.upstream.providers.openai import OpenAIAdapter
from llmgate_sidecar.upstream.providers.vertex import VertexAIAdapter

# Kinds whose wire format is OpenAI's chat completions. `mock` speaks it in-process.
OPENAI_FAMILY = frozenset({
    "openai", "mistral", "groq", "deepseek", "together", "fireworks", "openrouter", "xai",
    "ollama", "vllm", "openai-compatible", "mock",
})


class UnsupportedProvider(Exception):
    """The config names a provider kind this sidecar cannot translate yet."""


def adapter_for(provider: Provider, credentials: Credentials) -> Adapter:
    if provider.kind in OPENAI_FAMILY:
        return OpenAIAdapter(provider, credentials)
    if provider.kind == "anthropic":
        return AnthropicAdapter(provider, credentials)
    if provider.kind == "azure-openai":
        return AzureOpenAIAdapter(provider, credentials)
    if provider.kind == "gemini":
        return GeminiAdapter(provider, credentials)
    if provider.kind == "vertex-ai":
        return VertexAIAdapter(provider, credentials)
    if provider.kind == "cohere":
        return CohereAdapter(provider, credentials)
    if provider.kind == "bedrock":
        return BedrockAdapter(provider, credentials)
    raise UnsupportedProvider(f"provider kind {provider.kind!r} is not supported by this "
                              f"sidecar build yet")


__all__ = ["OPENAI_FAMILY", "Adapter", "Credentials", "UnsupportedProvider", "adapter_for"]
