"""Provider kinds: one row per kind, the one place every fact about a kind is written.

`ProviderKind` (the CRD's `spec.provider` enum, generated from the API models that use it)
and `KINDS` (one `Kind` per kind) live here, in the contract, because both planes read them:

- the operator: which credentials a ProviderSecret of this kind must name (`credentials`) and
  whether `spec.baseURL` is required (`base_url_required`);
- the sidecar: which adapter speaks the kind's wire format (`wire`), its default base URL,
  whether the sidecar serves it in process (`in_process`, no HTTP transport), which
  credentials it loads, and what it supports beyond chat (`embeddings`, `passthrough`). The
  adapters declare those capabilities from this row (`upstream.providers.base.Adapter`).

Every kind serves chat completions, JSON and streamed. Adding a kind: add it to
`ProviderKind`, give it a row in `KINDS` (an import-time check refuses a kind without one),
and, for a new wire format, an adapter in `llmgate_sidecar.upstream.providers`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

ProviderKind = Literal[
    "openai", "azure-openai", "anthropic", "gemini", "vertex-ai", "bedrock", "mistral",
    "cohere", "groq", "deepseek", "together", "fireworks", "openrouter", "xai", "ollama",
    "vllm", "openai-compatible", "mock",
]
PROVIDER_KINDS: tuple[str, ...] = ProviderKind.__args__  # type: ignore[attr-defined]

# The wire format an adapter speaks (several kinds share OpenAI's).
Wire = Literal["openai", "azure-openai", "anthropic", "gemini", "vertex-ai", "cohere",
               "bedrock"]
# What a ProviderSecret of the kind must name: `spec.apiKey`; an API key if it has one;
# `spec.aws` (keys, or the pod's web identity); `spec.gcp`; nothing.
CredentialsKind = Literal["api-key", "optional-api-key", "aws", "gcp", "none"]

# OpenAI paths (under /v1/) passed through to a target as they came, in the order the
# sidecar routes them.
PASSTHROUGH_OPERATIONS: tuple[str, ...] = (
    "responses", "completions", "images/generations", "audio/speech", "audio/transcriptions",
    "audio/translations", "moderations")
_OPENAI_PATHS = frozenset(PASSTHROUGH_OPERATIONS)
# An Azure deployment serves these; /v1/responses and /v1/moderations are not Azure paths.
_AZURE_PATHS = frozenset({"completions", "images/generations", "audio/speech",
                          "audio/transcriptions", "audio/translations"})


@dataclass(frozen=True, slots=True)
class Kind:
    """What one provider kind needs and supports (module docstring)."""

    wire: Wire
    credentials: CredentialsKind
    default_base_url: str | None = None  # None: from spec.baseURL, or built by the adapter
    base_url_required: bool = False
    embeddings: bool = False  # POST /v1/embeddings
    passthrough: frozenset[str] = frozenset()  # PASSTHROUGH_OPERATIONS it serves
    in_process: bool = False  # answered by the sidecar itself, never over the network


def _openai_family(base_url: str | None, credentials: CredentialsKind = "api-key", *,
                   required: bool = False) -> Kind:
    return Kind("openai", credentials, base_url, required, embeddings=True,
                passthrough=_OPENAI_PATHS)


KINDS: Mapping[str, Kind] = {
    "openai": _openai_family("https://api.openai.com/v1"),
    "azure-openai": Kind("azure-openai", "api-key", base_url_required=True, embeddings=True,
                         passthrough=_AZURE_PATHS),
    "anthropic": Kind("anthropic", "api-key", "https://api.anthropic.com"),
    "gemini": Kind("gemini", "api-key", "https://generativelanguage.googleapis.com/v1beta",
                   embeddings=True),
    # The URL is built from spec.gcp's project and location.
    "vertex-ai": Kind("vertex-ai", "gcp", embeddings=True),
    # The URL is built from spec.aws's region.
    "bedrock": Kind("bedrock", "aws", embeddings=True),
    "mistral": _openai_family("https://api.mistral.ai/v1"),
    "cohere": Kind("cohere", "api-key", "https://api.cohere.com", embeddings=True),
    "groq": _openai_family("https://api.groq.com/openai/v1"),
    "deepseek": _openai_family("https://api.deepseek.com/v1"),
    "together": _openai_family("https://api.together.xyz/v1"),
    "fireworks": _openai_family("https://api.fireworks.ai/inference/v1"),
    "openrouter": _openai_family("https://openrouter.ai/api/v1"),
    "xai": _openai_family("https://api.x.ai/v1"),
    "ollama": _openai_family(None, "optional-api-key", required=True),
    "vllm": _openai_family(None, "optional-api-key", required=True),
    "openai-compatible": _openai_family(None, "optional-api-key", required=True),
    # The built-in model (sidecar upstream.mock): chat, embeddings and legacy completions;
    # routes skip it for the other paths (a 400 when no other target can serve them).
    "mock": Kind("openai", "none", embeddings=True, passthrough=frozenset({"completions"}),
                 in_process=True),
}
if set(KINDS) != set(PROVIDER_KINDS):  # pragma: no cover - a kind added without its row
    raise RuntimeError(f"provider kinds without a row in KINDS: "
                       f"{sorted(set(PROVIDER_KINDS) - set(KINDS))}")

# Kinds whose ProviderSecret must set spec.baseURL, in `ProviderKind` order.
REQUIRES_BASE_URL: tuple[str, ...] = tuple(k for k in PROVIDER_KINDS
                                           if KINDS[k].base_url_required)
