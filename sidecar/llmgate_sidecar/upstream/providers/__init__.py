"""Provider adapters by wire format. `adapter_for` is the only place that maps a provider
kind to an adapter: through the kind's `wire` in the contract's table
(`llmgate_contract.providers.KINDS`). An adapter's module is imported when a config first
names a kind of its wire: a sidecar serving only OpenAI-compatible providers never loads
the Anthropic, Bedrock (with SigV4 and the event-stream parser), Cohere, Gemini and Vertex
translations (12 modules, 0.3 MiB of its resident set: docs/performance.md)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from llmgate_contract.config import Provider
from llmgate_contract.providers import KINDS, Wire

from llmgate_sidecar.upstream.providers.base import Adapter, Credentials

# Wire format -> (module of this package, adapter class in it).
ADAPTERS: dict[Wire, tuple[str, str]] = {
    "openai": ("openai", "OpenAIAdapter"),
    "azure-openai": ("azure", "AzureOpenAIAdapter"),
    "anthropic": ("anthropic", "AnthropicAdapter"),
    "gemini": ("gemini", "GeminiAdapter"),
    "vertex-ai": ("vertex", "VertexAIAdapter"),
    "cohere": ("cohere", "CohereAdapter"),
    "bedrock": ("bedrock", "BedrockAdapter"),
}


def adapter_class(wire: Wire) -> Callable[[Provider, Credentials], Adapter]:
    """The adapter of `wire`, its module imported on first use."""
    module, name = ADAPTERS[wire]
    adapter: Callable[[Provider, Credentials], Adapter] = getattr(
        importlib.import_module(f"{__name__}.{module}"), name)
    return adapter


class UnsupportedProvider(Exception):
    """The config names a provider kind this sidecar cannot translate (a newer contract)."""


def adapter_for(provider: Provider, credentials: Credentials) -> Adapter:
    row = KINDS.get(provider.kind)
    if row is None:
        raise UnsupportedProvider(f"provider kind {provider.kind!r} is not supported by this "
                                  f"sidecar build")
    return adapter_class(row.wire)(provider, credentials)


__all__ = ["ADAPTERS", "Adapter", "Credentials", "UnsupportedProvider", "adapter_class",
           "adapter_for"]
