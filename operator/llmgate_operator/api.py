"""The custom resources' `spec`s as pydantic models (group llmgate.io, version v1alpha1).

Parsed once at the boundary (kopf handlers, `llmgate dev` file loading); everything after
works on these typed models. They mirror `crds/*.yaml`: a contract test proves that every
example CR passes both and every known-bad CR fails both. No Kubernetes client here.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Literal

from llmgate_contract.config import BudgetPeriod, ErrorClass, ProviderKind, Strategy
from llmgate_contract.patterns import check_patterns
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

GROUP = "llmgate.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
DECIMAL_PATTERN = r"^[0-9]+(\.[0-9]{1,6})?$"
METADATA_PARTITION = r"metadata\.[-_.a-zA-Z0-9]+"
RFC3339_PATTERN = (r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
                   r"(Z|[+-][0-9]{2}:[0-9]{2})")
REQUIRES_BASE_URL = frozenset({"openai-compatible", "ollama", "vllm", "azure-openai"})

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """'1m30s' -> 90.0 seconds. Raises ValueError on anything else."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"invalid duration {text!r} (use e.g. 500ms, 30s, 2m, 1h)")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)





class SecretKeyRef(_Spec):
    name: str = Field(pattern=NAME_PATTERN, max_length=253)
    key: str = Field(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)


class SecretRef(_Spec):
    secret_key_ref: SecretKeyRef = Field(alias="secretKeyRef")


class AwsIdentity(_Spec):
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")
    access_key_id: SecretRef | None = Field(default=None, alias="accessKeyId")
    secret_access_key: SecretRef | None = Field(default=None, alias="secretAccessKey")
    session_token: SecretRef | None = Field(default=None, alias="sessionToken")

    @model_validator(mode="after")
    def _pair(self) -> AwsIdentity:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("accessKeyId and secretAccessKey go together")
        return self


class GcpIdentity(_Spec):
    project: str = Field(min_length=1)
    location: str = Field(default="us-central1", min_length=1)
    service_account_key: SecretRef | None = Field(default=None, alias="serviceAccountKey")


class AzureOptions(_Spec):
    api_version: str = Field(alias="apiVersion", pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(-preview)?$")


class PriceSpec(_Spec):
    input_per_million: str = Field(alias="inputPerMillion", pattern=DECIMAL_PATTERN)
    output_per_million: str = Field(alias="outputPerMillion", pattern=DECIMAL_PATTERN)
    cached_input_per_million: str | None = Field(
        default=None, alias="cachedInputPerMillion", pattern=DECIMAL_PATTERN)


class MockSpec(_Spec):
    latency_ms: int = Field(default=0, ge=0, le=600_000, alias="latencyMs")
    chunk_delay_ms: int = Field(default=0, ge=0, le=60_000, alias="chunkDelayMs")
    words_per_chunk: int = Field(default=1, ge=1, le=1000, alias="wordsPerChunk")
    reply: str | None = Field(default=None, max_length=100_000)


class ProviderSecretSpec(_Spec):
    provider: ProviderKind
    base_url: str | None = Field(default=None, alias="baseURL", pattern=r"^https?://.+")
    api_key: SecretRef | None = Field(default=None, alias="apiKey")
    aws: AwsIdentity | None = None
    gcp: GcpIdentity | None = None
    azure: AzureOptions | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    pricing: dict[str, PriceSpec] = Field(default_factory=dict)
    mock: MockSpec | None = None

    @model_validator(mode="after")
    def _base_url_where_needed(self) -> ProviderSecretSpec:
        if self.provider in REQUIRES_BASE_URL and not self.base_url:
            raise ValueError(f"baseURL is required for provider {self.provider}")
        return self


class TargetSpec(_Spec):
    """A leaf target, or (with `targets`) a nested group."""

    provider: str | None = Field(default=None, pattern=NAME_PATTERN)
    model: str | None = Field(default=None, min_length=1)
    weight: int = Field(default=1, ge=0, le=1_000_000)
    timeout: str | None = Field(default=None, pattern=DURATION_PATTERN)
    params: dict[str, Any] = Field(default_factory=dict)
    strategy: Strategy | None = None
    targets: list[TargetSpec] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _leaf_or_group(self) -> TargetSpec:
        if self.targets is None and (self.provider is None or self.model is None):
            raise ValueError("a target needs provider and model, or targets (a nested group)")
        if self.targets is not None and (self.provider is not None or self.model is not None):
            raise ValueError("a nested group has targets, not provider/model")
        return self


class RuleMatchSpec(_Spec):
    headers: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=dict)
    virtual_keys: list[str] = Field(default_factory=list, alias="virtualKeys")


class RuleSpec(_Spec):
    match: RuleMatchSpec
    strategy: Strategy = "fallback"
    targets: list[TargetSpec] = Field(min_length=1)


class BackoffSpec(_Spec):
    initial: str = Field(default="200ms", pattern=DURATION_PATTERN)
    max: str = Field(default="5s", pattern=DURATION_PATTERN)


class RetrySpec(_Spec):
    attempts: int = Field(default=1, ge=1, le=10)
    backoff: BackoffSpec = Field(default_factory=BackoffSpec)
    on_status: list[int] | None = Field(default=None, alias="onStatus")

    @field_validator("on_status")
    @classmethod
    def _statuses(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(not 400 <= s <= 599 for s in v):
            raise ValueError("onStatus holds HTTP error statuses (400-599)")
        return v


class CircuitBreakerSpec(_Spec):
    failures: int = Field(default=5, ge=1, le=1000)
    window: str = Field(default="30s", pattern=DURATION_PATTERN)
    cooldown: str = Field(default="30s", pattern=DURATION_PATTERN)


class CacheSpec(_Spec):
    mode: Literal["exact", "off"] = "off"
    ttl: str = Field(default="5m", pattern=DURATION_PATTERN)
    partition_by: list[str] = Field(default_factory=lambda: ["virtualKey"], alias="partitionBy")

    @field_validator("partition_by")
    @classmethod
    def _partitions(cls, v: list[str]) -> list[str]:
        for p in v:
            if p not in ("virtualKey", "namespace") and not re.fullmatch(METADATA_PARTITION, p):
                raise ValueError(
                    f"partitionBy entry {p!r}: use virtualKey, namespace or metadata.<key>")
        return v


PiiType = Literal["email", "phone", "creditCard", "iban", "ssn", "ip"]
PII_TYPES: tuple[PiiType, ...] = ("email", "phone", "creditCard", "iban", "ssn", "ip")


class PiiSpec(_Spec):
    action: Literal["redact", "block"] = "redact"
    types: list[PiiType] = Field(default_factory=lambda: list(PII_TYPES))


class GuardrailsSpec(_Spec):
    pii: PiiSpec | None = None
    block_patterns: list[str] = Field(default_factory=list, alias="blockPatterns")
    max_input_tokens: int | None = Field(default=None, ge=1, alias="maxInputTokens")

    @field_validator("block_patterns")
    @classmethod
    def _linear_time(cls, v: list[str]) -> list[str]:
        return check_patterns(v)


class LLMRouteSpec(_Spec):
    model: str | None = Field(default=None, min_length=1, max_length=256)
    aliases: list[str] = Field(default_factory=list)
    strategy: Strategy = "fallback"
    targets: list[TargetSpec] = Field(min_length=1)
    rules: list[RuleSpec] = Field(default_factory=list)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    fallback_on: list[ErrorClass] | None = Field(default=None, alias="fallbackOn")
    timeout: str | None = Field(default=None, pattern=DURATION_PATTERN)
    circuit_breaker: CircuitBreakerSpec | None = Field(default=None, alias="circuitBreaker")
    cache: CacheSpec = Field(default_factory=CacheSpec)
    guardrails: GuardrailsSpec | None = None


class BudgetSpec(_Spec):
    limit: str = Field(pattern=DECIMAL_PATTERN)
    period: BudgetPeriod = "30d"

    @property
    def amount(self) -> Decimal:
        return Decimal(self.limit)


class LimitsSpec(_Spec):
    requests_per_minute: int | None = Field(default=None, ge=1, alias="requestsPerMinute")
    tokens_per_minute: int | None = Field(default=None, ge=1, alias="tokensPerMinute")
    max_parallel: int | None = Field(default=None, ge=1, alias="maxParallel")


class VirtualKeySpec(_Spec):
    models: list[str] = Field(default_factory=list)
    budget: BudgetSpec | None = None
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    expires_at: str | None = Field(default=None, alias="expiresAt")
    disabled: bool = False
    metadata: dict[str, str] = Field(default_factory=dict)
    secret_name: str | None = Field(default=None, alias="secretName", pattern=NAME_PATTERN)

    @field_validator("expires_at")
    @classmethod
    def _timestamp(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(RFC3339_PATTERN, v):
            raise ValueError("expiresAt must be an RFC 3339 date-time, e.g. 2027-01-01T00:00:00Z")
        return v


Kind = Literal["ProviderSecret", "LLMRoute", "VirtualKey"]
SPEC_MODELS: dict[str, type[_Spec]] = {
    "ProviderSecret": ProviderSecretSpec,
    "LLMRoute": LLMRouteSpec,
    "VirtualKey": VirtualKeySpec,
}
PLURALS: dict[str, str] = {
    "ProviderSecret": "providersecrets",
    "LLMRoute": "llmroutes",
    "VirtualKey": "virtualkeys",
}

AnySpec = ProviderSecretSpec | LLMRouteSpec | VirtualKeySpec


def parse_spec(kind: str, spec: Any) -> AnySpec:
    """Validate a CR's `spec` for `kind` (raises pydantic.ValidationError / KeyError)."""
    return SPEC_MODELS[kind].model_validate(spec or {})  # type: ignore[return-value]


def default_secret_name(virtual_key: str) -> str:
    return f"{virtual_key}-llmgate-key"
