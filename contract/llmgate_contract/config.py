"""The compiled config: the one contract between the operator and the sidecar.

The operator (and `llmgate dev`) builds a `CompiledConfig` from a namespace's CRs; the
sidecar loads it from the mounted ConfigMap and Secret. It is Kubernetes-free, versioned
(`SCHEMA_VERSION`), serialised as canonical JSON and identified by a content hash
(`generation`). It must not import either plane, and it never holds a secret value: provider
credentials travel as separate files in the credentials Secret, named here by file name.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from llmgate_contract.patterns import check_patterns

SCHEMA_VERSION: Literal[1] = 1

# File names inside the two mounted volumes (ConfigMap `llmgate-config`, Secret
# `llmgate-credentials`). Both carry GENERATION_FILE so the sidecar can tell a torn update.
CONFIG_FILE = "config.json"
GENERATION_FILE = "generation"
CONFIGMAP_NAME = "llmgate-config"
CREDENTIALS_SECRET_NAME = "llmgate-credentials"
# The API key the injector gives app containers of a pod bound to a VirtualKey (SDKs insist
# on some key); the sidecar treats it as "no key" and applies the bound key's policy.
POD_BOUND_KEY = "llmgate-pod-bound"

ProviderKind = Literal[
    "openai", "azure-openai", "anthropic", "gemini", "vertex-ai", "bedrock", "mistral",
    "cohere", "groq", "deepseek", "together", "fireworks", "openrouter", "xai", "ollama",
    "vllm", "openai-compatible", "mock",
]
PROVIDER_KINDS: tuple[str, ...] = ProviderKind.__args__  # type: ignore[attr-defined]

Strategy = Literal["fallback", "loadbalance", "least-busy", "latency", "cost"]
ErrorClass = Literal[
    "rateLimit", "serverError", "timeout", "connectionError", "contextWindow", "contentFilter",
]
BudgetPeriod = Literal["1h", "1d", "7d", "30d", "calendar-month", "none"]

DEFAULT_FALLBACK_ON: tuple[ErrorClass, ...] = (
    "rateLimit", "serverError", "timeout", "connectionError",
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Price(_Model):
    """USD per million tokens. Decimals, never floats: this is money."""

    input_per_million: Decimal = Field(alias="inputPerMillion")
    output_per_million: Decimal = Field(alias="outputPerMillion")
    cached_input_per_million: Decimal | None = Field(default=None, alias="cachedInputPerMillion")


class MockOptions(_Model):
    """Behaviour of the built-in `mock` provider (demos, tests, load tests)."""

    latency_ms: int = Field(default=0, ge=0, alias="latencyMs")
    chunk_delay_ms: int = Field(default=0, ge=0, alias="chunkDelayMs")
    words_per_chunk: int = Field(default=1, ge=1, alias="wordsPerChunk")
    reply: str | None = None


class Provider(_Model):
    """One upstream account. Credentials are named by file in the credentials volume."""

    name: str
    kind: ProviderKind
    base_url: str | None = Field(default=None, alias="baseURL")
    api_key_file: str | None = Field(default=None, alias="apiKeyFile")
    headers: dict[str, str] = Field(default_factory=dict)
    pricing: dict[str, Price] = Field(default_factory=dict)
    # Cloud identity; values that are secrets are again file names.
    azure_api_version: str | None = Field(default=None, alias="azureApiVersion")
    aws_region: str | None = Field(default=None, alias="awsRegion")
    aws_files: dict[str, str] = Field(default_factory=dict, alias="awsFiles")
    gcp_project: str | None = Field(default=None, alias="gcpProject")
    gcp_location: str | None = Field(default=None, alias="gcpLocation")
    gcp_key_file: str | None = Field(default=None, alias="gcpKeyFile")
    mock: MockOptions | None = None


class Target(_Model):
    """A leaf of the target tree: one provider account and the upstream model name."""

    type: Literal["target"] = "target"
    provider: str
    model: str
    weight: int = 1
    timeout: float | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class Group(_Model):
    """An inner node of the target tree: a strategy over children (groups nest)."""

    type: Literal["group"] = "group"
    strategy: Strategy = "fallback"
    weight: int = 1
    targets: list[Annotated[Target | Group, Field(discriminator="type")]]


class RuleMatch(_Model):
    headers: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=dict)
    virtual_keys: list[str] = Field(default_factory=list, alias="virtualKeys")


class Rule(_Model):
    match: RuleMatch
    group: Group


class Backoff(_Model):
    initial: float = 0.2
    max: float = 5.0


class Retry(_Model):
    attempts: int = 1
    backoff: Backoff = Field(default_factory=Backoff)
    on_status: list[int] = Field(default_factory=lambda: [429, 500, 502, 503, 504],
                                 alias="onStatus")


class CircuitBreaker(_Model):
    failures: int = 5
    window: float = 30.0
    cooldown: float = 30.0


class Cache(_Model):
    mode: Literal["exact", "off"] = "off"
    ttl: float = 300.0
    partition_by: list[str] = Field(default_factory=lambda: ["virtualKey"], alias="partitionBy")


class Pii(_Model):
    action: Literal["redact", "block"] = "redact"
    types: list[str] = Field(default_factory=list)


class Guardrails(_Model):
    pii: Pii | None = None
    # A config carrying a pattern RE2 cannot bound is refused on load, not at match time.
    block_patterns: Annotated[list[str], AfterValidator(check_patterns)] = Field(
        default_factory=list, alias="blockPatterns")
    max_input_tokens: int | None = Field(default=None, alias="maxInputTokens")


class Route(_Model):
    """A public model name (and aliases) resolved to a target tree."""

    name: str
    model: str
    aliases: list[str] = Field(default_factory=list)
    group: Group
    rules: list[Rule] = Field(default_factory=list)
    retry: Retry = Field(default_factory=Retry)
    fallback_on: list[ErrorClass] = Field(default_factory=lambda: list(DEFAULT_FALLBACK_ON),
                                          alias="fallbackOn")
    timeout: float | None = None
    circuit_breaker: CircuitBreaker | None = Field(default=None, alias="circuitBreaker")
    cache: Cache = Field(default_factory=Cache)
    guardrails: Guardrails | None = None


class Budget(_Model):
    limit: Decimal
    period: BudgetPeriod = "30d"


class Limits(_Model):
    requests_per_minute: int | None = Field(default=None, alias="requestsPerMinute")
    tokens_per_minute: int | None = Field(default=None, alias="tokensPerMinute")
    max_parallel: int | None = Field(default=None, alias="maxParallel")


class KeyHash(_Model):
    """SHA-256 (hex) of a virtual key; `not_after` bounds a rotated-out key's grace period."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    not_after: str | None = Field(default=None, alias="notAfter")


class VirtualKey(_Model):
    name: str
    hashes: list[KeyHash] = Field(default_factory=list)
    key_prefix: str | None = Field(default=None, alias="keyPrefix")
    models: list[str] = Field(default_factory=list)
    budget: Budget | None = None
    limits: Limits = Field(default_factory=Limits)
    expires_at: str | None = Field(default=None, alias="expiresAt")
    disabled: bool = False
    metadata: dict[str, str] = Field(default_factory=dict)


class CompiledConfig(_Model):
    """Everything one namespace's sidecars need, minus secret values."""

    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, alias="schemaVersion")
    namespace: str
    providers: dict[str, Provider] = Field(default_factory=dict)
    routes: list[Route] = Field(default_factory=list)
    virtual_keys: list[VirtualKey] = Field(default_factory=list, alias="virtualKeys")

    def canonical_json(self) -> str:
        """Deterministic JSON: sorted keys, no whitespace, aliases; equal configs, equal text."""
        return json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True,
                          separators=(",", ":"), ensure_ascii=False)

    @property
    def generation(self) -> str:
        """Content hash of the canonical JSON; the version both volumes must agree on."""
        return content_hash(self.canonical_json())


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_config(text: str | bytes) -> CompiledConfig:
    """Parse and validate a config document (raises pydantic.ValidationError / ValueError)."""
    return CompiledConfig.model_validate_json(text)
