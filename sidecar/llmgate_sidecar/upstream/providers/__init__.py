"""Provider adapters by wire format. `adapter_for` is the only place that maps a provider
kind to an adapter: through the kind's `wire` in the contract's table
(`llmgate_contract.providers.KINDS`)."""

from __future__ import annotations

from collections.abc import Callable

from llmgate_contract.config import Provider
from llmgate_contract.providers import KINDS, Wire

from llmgate_sidecar.upstream.providers.anthropic import AnthropicAdapter
from llmgate_sidecar.upstream.providers.azure import AzureOpenAIAdapter
from llmgate_sidecar.upstream.providers.base import Adapter, Credentials
from llmgate_sidecar.upstream.providers.bedrock import BedrockAdapter
from llmgate_sidecar.upstream.providers.cohere import CohereAdapter
from llmgate_sidecar.upstream.providers.gemini import GeminiAdapter
from llmgate_sidecar.upstream.providers.openai import OpenAIAdapter
from llmgate_sidecar.upstream.providers.vertex import VertexAIAdapter

ADAPTERS: dict[Wire, Callable[[Provider, Credentials], Adapter]] = {
    "openai": OpenAIAdapter,
    "azure-openai": AzureOpenAIAdapter,
    "anthropic": AnthropicAdapter,
    "gemini": GeminiAdapter,
    "vertex-ai": VertexAIAdapter,
    "cohere": CohereAdapter,
    "bedrock": BedrockAdapter,
}


class UnsupportedProvider(Exception):
    """The config names a provider kind this sidecar cannot translate (a newer contract)."""


def adapter_for(provider: Provider, credentials: Credentials) -> Adapter:
    row = KINDS.get(provider.kind)
    if row is None:
        raise UnsupportedProvider(f"provider kind {provider.kind!r} is not supported by this "
                                  f"sidecar build")
    return ADAPTERS[row.wire](provider, credentials)


__all__ = ["ADAPTERS", "Adapter", "Credentials", "UnsupportedProvider", "adapter_for"]
