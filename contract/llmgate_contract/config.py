"""The compiled config: the one contract between the operator and the sidecar.

The operator (and `llmgate dev`) builds a `CompiledConfig` from a namespace's CRs; the
sidecar loads it from the mounted ConfigMap and Secret. It is Kubernetes-free, versioned
(`SCHEMA_VERSION`), serialised as canonical JSON and identified by a content hash
(`generation`). It must not import either plane, and it never holds a secret value: provider
credentials travel as separate files in the credentials Secret, named here by file name.
Every field's description says what it means and which CR field it comes from
(docs/reference.md is generated from them; tests/contract/test_reference.py checks both).
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from llmgate_contract.patterns import check_patterns
from llmgate_contract.providers import PROVIDER_KINDS as PROVIDER_KINDS  # re-exported
from llmgate_contract.providers import ProviderKind as ProviderKind  # re-exported
from llmgate_contract.versions import Loaded, canonical, document, read, since

SCHEMA_VERSION = 2
"""The newest config schema this build writes and reads (see `versions`: a config is written
in the oldest version that expresses it). 2 added `Price.cacheWritePerMillion` and
`Price.cacheWrite1hPerMillion`."""
MIN_SCHEMA_VERSION = 1
"""The oldest config schema this build reads."""

# File names inside the two mounted volumes (ConfigMap `llmgate-config`, Secret
# `llmgate-credentials`). Both carry GENERATION_FILE so the sidecar can tell a torn update.
CONFIG_FILE = "config.json"
GENERATION_FILE = "generation"
CONFIGMAP_NAME = "llmgate-config"
CREDENTIALS_SECRET_NAME = "llmgate-credentials"
# Data key in that Secret holding the shared Redis's password (when Redis requires auth);
# injected sidecars read it through env LLMGATE_REDIS_PASSWORD (valueFrom secretKeyRef).
REDIS_PASSWORD_KEY = "redis-password"
# The API key the injector gives app containers of a pod bound to a VirtualKey (SDKs insist
# on some key); the sidecar treats it as "no key" and applies the bound key's policy.
POD_BOUND_KEY = "llmgate-pod-bound"


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
    """USD per million tokens of one upstream model. Decimals, never floats: this is money."""

    input_per_million: Decimal = Field(
        alias="inputPerMillion", description="USD per million input (prompt) tokens. "
        "From `ProviderSecret.spec.pricing{}.inputPerMillion`.")
    output_per_million: Decimal = Field(
        alias="outputPerMillion", description="USD per million output (completion) tokens. "
        "From `ProviderSecret.spec.pricing{}.outputPerMillion`.")
    cached_input_per_million: Decimal | None = Field(
        default=None, alias="cachedInputPerMillion",
        description="USD per million input tokens read from the upstream's prompt cache; "
        "None bills them as ordinary input. "
        "From `ProviderSecret.spec.pricing{}.cachedInputPerMillion`.")
    cache_write_per_million: Decimal | None = Field(
        default=None, alias="cacheWritePerMillion", json_schema_extra=since(2),
        description="USD per million input tokens written to the upstream's prompt cache; "
        "None bills them as ordinary input. Schema version 2 (a sidecar that reads only 1 "
        "would bill the writes as input, so a config that sets it is written as 2). "
        "From `ProviderSecret.spec.pricing{}.cacheWritePerMillion`.")
    cache_write_1h_per_million: Decimal | None = Field(
        default=None, alias="cacheWrite1hPerMillion", json_schema_extra=since(2),
        description="USD per million input tokens written to the upstream's 1-hour prompt "
        "cache (Anthropic); None bills them as other cache writes. Schema version 2. "
        "From `ProviderSecret.spec.pricing{}.cacheWrite1hPerMillion`.")


class MockOptions(_Model):
    """Behaviour of the built-in `mock` provider (demos, tests, load tests)."""

    latency_ms: int = Field(
        default=0, ge=0, alias="latencyMs",
        description="Milliseconds before the first byte. "
        "From `ProviderSecret.spec.mock.latencyMs`.")
    chunk_delay_ms: int = Field(
        default=0, ge=0, alias="chunkDelayMs",
        description="Milliseconds between streamed chunks. "
        "From `ProviderSecret.spec.mock.chunkDelayMs`.")
    words_per_chunk: int = Field(
        default=1, ge=1, alias="wordsPerChunk",
        description="Words per streamed chunk. From `ProviderSecret.spec.mock.wordsPerChunk`.")
    reply: str | None = Field(
        default=None, description="Fixed reply text; None echoes the request deterministically. "
        "From `ProviderSecret.spec.mock.reply`.")


class Provider(_Model):
    """One upstream account. Credentials are named by file in the credentials volume."""

    name: str = Field(description="The account's name, which targets refer to. "
                      "From `ProviderSecret.metadata.name`.")
    kind: ProviderKind = Field(description="Which upstream API (and adapter) this is. "
                               "From `ProviderSecret.spec.provider`.")
    base_url: str | None = Field(
        default=None, alias="baseURL",
        description="API base URL; None uses the kind's public endpoint. "
        "From `ProviderSecret.spec.baseURL`.")
    api_key_file: str | None = Field(
        default=None, alias="apiKeyFile",
        description="File in the credentials volume holding the API key (`<name>.api-key`); "
        "None: no key. From `ProviderSecret.spec.apiKey` (the Secret's value is copied there).")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra headers sent on every upstream request. "
        "From `ProviderSecret.spec.headers`.")
    header_files: dict[str, str] = Field(
        default_factory=dict, alias="headerFiles", json_schema_extra=since(2),
        description="Extra headers whose values are credentials: header name -> file in the "
        "credentials volume holding the value (`<name>.header.<lowercased name>`). Schema "
        "version 2. From `ProviderSecret.spec.secretHeaders` (the Secret's value is copied "
        "there, never into the config).")
    pricing: dict[str, Price] = Field(
        default_factory=dict,
        description="Prices by upstream model name; they override the built-in price table. "
        "From `ProviderSecret.spec.pricing`.")
    azure_api_version: str | None = Field(
        default=None, alias="azureApiVersion",
        description="Azure OpenAI `api-version` query parameter. "
        "From `ProviderSecret.spec.azure.apiVersion`.")
    aws_region: str | None = Field(
        default=None, alias="awsRegion",
        description="AWS region of the Bedrock endpoint and of request signing. "
        "From `ProviderSecret.spec.aws.region`.")
    aws_files: dict[str, str] = Field(
        default_factory=dict, alias="awsFiles",
        description="Credential file by role (`aws-access-key-id`, `aws-secret-access-key`, "
        "`aws-session-token`); empty: the pod's web identity through STS. "
        "From `ProviderSecret.spec.aws.accessKeyId`, `ProviderSecret.spec.aws.secretAccessKey` "
        "and `ProviderSecret.spec.aws.sessionToken`.")
    gcp_project: str | None = Field(
        default=None, alias="gcpProject",
        description="GCP project of the Vertex AI endpoint. "
        "From `ProviderSecret.spec.gcp.project`.")
    gcp_location: str | None = Field(
        default=None, alias="gcpLocation",
        description="Vertex AI location (region). From `ProviderSecret.spec.gcp.location`.")
    gcp_key_file: str | None = Field(
        default=None, alias="gcpKeyFile",
        description="File holding the service account key JSON; None: workload identity. "
        "From `ProviderSecret.spec.gcp.serviceAccountKey`.")
    mock: MockOptions | None = Field(
        default=None, description="Behaviour of the `mock` kind. From `ProviderSecret.spec.mock`.")


class Target(_Model):
    """A leaf of the target tree: one provider account and the upstream model name."""

    type: Literal["target"] = Field(
        default="target", description="Tree node discriminator. Set by the operator: a target "
        "with provider and model.")
    provider: str = Field(description="Name of the Provider (key of `providers`) to call. "
                          "From `LLMRoute.spec.targets[].provider` (at any depth, also under "
                          "`LLMRoute.spec.rules[].targets[]`).")
    model: str = Field(description="Model name sent upstream. "
                       "From `LLMRoute.spec.targets[].model`.")
    weight: int = Field(default=1, description="Share of traffic under `loadbalance`; 0 is a "
                        "standby. From `LLMRoute.spec.targets[].weight`.")
    timeout: float | None = Field(
        default=None, description="Per-attempt timeout in seconds; None: only the route's "
        "deadline. From `LLMRoute.spec.targets[].timeout` (a duration string).")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Request defaults merged into the upstream body; "
        "`max_tokens`/`max_completion_tokens` are ceilings. "
        "From `LLMRoute.spec.targets[].params`.")


class Group(_Model):
    """An inner node of the target tree: a strategy over children (groups nest)."""

    type: Literal["group"] = Field(
        default="group", description="Tree node discriminator. Set by the operator: the route's "
        "(or rule's) top level and every nested group.")
    strategy: Strategy = Field(
        default="fallback", description="How a child is chosen. From `LLMRoute.spec.strategy`, "
        "`LLMRoute.spec.rules[].strategy` or `LLMRoute.spec.targets[].strategy` (nested group).")
    weight: int = Field(default=1, description="This group's share under a `loadbalance` "
                        "parent. From `LLMRoute.spec.targets[].weight` (1 at the top).")
    targets: list[Annotated[Target | Group, Field(discriminator="type")]] = Field(
        description="Children in order; targets whose provider is not ready are left out. "
        "From `LLMRoute.spec.targets` or `LLMRoute.spec.rules[].targets`.")


class RuleMatch(_Model):
    """Conditions of a rule; all given ones must hold."""

    headers: dict[str, str] = Field(
        default_factory=dict, description="Request headers that must have these exact values. "
        "From `LLMRoute.spec.rules[].match.headers`.")
    metadata: dict[str, str] = Field(
        default_factory=dict, description="Request metadata (the `x-llmgate-metadata` JSON "
        "header) that must have these values. From `LLMRoute.spec.rules[].match.metadata`.")
    virtual_keys: list[str] = Field(
        default_factory=list, alias="virtualKeys", description="Names of the calling keys the "
        "rule applies to; empty: any. From `LLMRoute.spec.rules[].match.virtualKeys`.")


class Rule(_Model):
    """A conditional target tree; the first rule whose match holds serves the request."""

    match: RuleMatch = Field(description="When the rule applies. "
                             "From `LLMRoute.spec.rules[].match`.")
    group: Group = Field(description="What serves a matching request. "
                         "From `LLMRoute.spec.rules[].strategy` and "
                         "`LLMRoute.spec.rules[].targets`.")


class Backoff(_Model):
    """Exponential backoff with jitter between attempts on one target."""

    initial: float = Field(default=0.2, description="First delay in seconds. "
                           "From `LLMRoute.spec.retry.backoff.initial` (a duration string).")
    max: float = Field(default=5.0, description="Largest delay in seconds. "
                       "From `LLMRoute.spec.retry.backoff.max` (a duration string).")


class Retry(_Model):
    """Retries of one target before the route moves on."""

    attempts: int = Field(default=1, description="Attempts per target, the first included. "
                          "From `LLMRoute.spec.retry.attempts`.")
    backoff: Backoff = Field(default_factory=Backoff, description="Delay between attempts. "
                             "From `LLMRoute.spec.retry.backoff`.")
    on_status: list[int] = Field(
        default_factory=lambda: [429, 500, 502, 503, 504], alias="onStatus",
        description="Upstream HTTP statuses that are retried. "
        "From `LLMRoute.spec.retry.onStatus` (default 429, 500, 502, 503, 504).")


class CircuitBreaker(_Model):
    """Per-target breaker: `failures` within `window` skip the target for `cooldown`."""

    failures: int = Field(default=5, description="Failures that open the circuit. "
                          "From `LLMRoute.spec.circuitBreaker.failures`.")
    window: float = Field(default=30.0, description="Seconds in which failures are counted. "
                          "From `LLMRoute.spec.circuitBreaker.window` (a duration string).")
    cooldown: float = Field(default=30.0, description="Seconds an open circuit skips the "
                            "target. From `LLMRoute.spec.circuitBreaker.cooldown` "
                            "(a duration string).")


class Cache(_Model):
    """Exact-match response cache of a route."""

    mode: Literal["exact", "off"] = Field(default="off", description="`exact` caches answers "
                                          "by request; `off` does not. "
                                          "From `LLMRoute.spec.cache.mode`.")
    ttl: float = Field(default=300.0, description="Seconds an entry lives. "
                       "From `LLMRoute.spec.cache.ttl` (a duration string).")
    partition_by: list[str] = Field(
        default_factory=lambda: ["virtualKey"], alias="partitionBy",
        description="What separates cache entries: virtualKey, namespace, metadata.<key>. "
        "From `LLMRoute.spec.cache.partitionBy`.")


class Pii(_Model):
    """PII detection on request input."""

    action: Literal["redact", "block"] = Field(
        default="redact", description="Redact matches before the request leaves, or refuse it. "
        "From `LLMRoute.spec.guardrails.pii.action`.")
    types: list[str] = Field(default_factory=list, description="PII kinds to detect; empty: "
                             "all. From `LLMRoute.spec.guardrails.pii.types`.")


class Guardrails(_Model):
    """Input checks before a request leaves the pod."""

    pii: Pii | None = Field(default=None, description="PII detection; None: off. "
                            "From `LLMRoute.spec.guardrails.pii`.")
    # A config carrying a pattern RE2 cannot bound is refused on load, not at match time.
    block_patterns: Annotated[list[str], AfterValidator(check_patterns)] = Field(
        default_factory=list, alias="blockPatterns",
        description="RE2 patterns that refuse a request whose input matches. "
        "From `LLMRoute.spec.guardrails.blockPatterns`.")
    max_input_tokens: int | None = Field(
        default=None, alias="maxInputTokens",
        description="Refuse requests whose estimated input is larger; None: no ceiling. "
        "From `LLMRoute.spec.guardrails.maxInputTokens`.")


class Route(_Model):
    """A public model name (and aliases) resolved to a target tree."""

    name: str = Field(description="The route's name, for logs and metrics. "
                      "From `LLMRoute.metadata.name`.")
    model: str = Field(description="Public model name apps ask for. "
                       "From `LLMRoute.spec.model` (default `LLMRoute.metadata.name`).")
    aliases: list[str] = Field(default_factory=list, description="More public names, sorted. "
                               "From `LLMRoute.spec.aliases`.")
    group: Group = Field(description="The target tree when no rule matches. "
                         "From `LLMRoute.spec.strategy` and `LLMRoute.spec.targets`.")
    rules: list[Rule] = Field(default_factory=list, description="Conditional trees, tried in "
                              "order before `group`. From `LLMRoute.spec.rules`.")
    retry: Retry = Field(default_factory=Retry, description="Retries per target. "
                         "From `LLMRoute.spec.retry`.")
    fallback_on: list[ErrorClass] = Field(
        default_factory=lambda: list(DEFAULT_FALLBACK_ON), alias="fallbackOn",
        description="Error classes that move on to the next target; others answer the client. "
        "From `LLMRoute.spec.fallbackOn`.")
    timeout: float | None = Field(
        default=None, description="Deadline in seconds for the whole request, retries and "
        "fallbacks included; None: none. From `LLMRoute.spec.timeout` (a duration string).")
    circuit_breaker: CircuitBreaker | None = Field(
        default=None, alias="circuitBreaker", description="Per-target breaker; None: off. "
        "From `LLMRoute.spec.circuitBreaker`.")
    cache: Cache = Field(default_factory=Cache, description="Response cache. "
                         "From `LLMRoute.spec.cache`.")
    guardrails: Guardrails | None = Field(default=None, description="Input checks; None: "
                                          "off. From `LLMRoute.spec.guardrails`.")


class Budget(_Model):
    """A USD budget per period, shared by all replicas."""

    limit: Decimal = Field(description="USD per period. From `VirtualKey.spec.budget.limit`.")
    period: BudgetPeriod = Field(default="30d", description="When spend resets. "
                                 "From `VirtualKey.spec.budget.period`.")


class Limits(_Model):
    """Rate limits of a key, enforced across all replicas; None: unlimited."""

    requests_per_minute: int | None = Field(
        default=None, alias="requestsPerMinute", description="Requests per minute. "
        "From `VirtualKey.spec.limits.requestsPerMinute`.")
    tokens_per_minute: int | None = Field(
        default=None, alias="tokensPerMinute", description="Tokens (input and output) per "
        "minute. From `VirtualKey.spec.limits.tokensPerMinute`.")
    max_parallel: int | None = Field(
        default=None, alias="maxParallel", description="Requests in flight at once. "
        "From `VirtualKey.spec.limits.maxParallel`.")


class KeyHash(_Model):
    """SHA-256 (hex) of a virtual key; `not_after` bounds a rotated-out key's grace period."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the key, hex. "
                        "Set by the operator: from the key Secret named by "
                        "`VirtualKey.spec.secretName` (its current or previous key).")
    not_after: str | None = Field(
        default=None, alias="notAfter", description="RFC 3339 time after which a rotated-out "
        "key is refused; None: the current key. Set by the operator: rotation time plus the "
        "`llmgate.io/rotation-grace` annotation of the VirtualKey.")


class VirtualKey(_Model):
    """An identity and its policy; the key itself is only here as hashes."""

    name: str = Field(description="The key's name, in logs, metrics and rules. "
                      "From `VirtualKey.metadata.name`.")
    hashes: list[KeyHash] = Field(
        default_factory=list, description="Hashes of the keys that authenticate as this "
        "identity (the current one, and the previous one during a rotation). "
        "Set by the operator: from the key Secret.")
    key_prefix: str | None = Field(
        default=None, alias="keyPrefix", description="First characters of the current key, to "
        "recognise it in logs. Set by the operator: from the key Secret.")
    models: list[str] = Field(
        default_factory=list, description="Public model names the key may use, sorted; empty: "
        "every route. From `VirtualKey.spec.models`.")
    budget: Budget | None = Field(default=None, description="USD budget; None: unlimited. "
                                  "From `VirtualKey.spec.budget`.")
    limits: Limits = Field(default_factory=Limits, description="Rate limits. "
                           "From `VirtualKey.spec.limits`.")
    expires_at: str | None = Field(
        default=None, alias="expiresAt", description="RFC 3339 time after which the key is "
        "refused; None: never. From `VirtualKey.spec.expiresAt`.")
    disabled: bool = Field(default=False, description="Refuse the key. "
                           "From `VirtualKey.spec.disabled`.")
    metadata: dict[str, str] = Field(
        default_factory=dict, description="Labels of the key. The sidecar does not read them "
        "yet (rules and cache partitions use request metadata). From `VirtualKey.spec.metadata`.")


class CompiledConfig(_Model):
    """Everything one namespace's sidecars need, minus secret values."""

    schema_version: int = Field(
        default=SCHEMA_VERSION, ge=1, alias="schemaVersion", description="Version of this "
        "document's shape; a sidecar refuses one outside the range it reads. Set by the "
        "operator: the oldest version that expresses the config (`versions.document`).")
    namespace: str = Field(description="The namespace compiled. Set by the operator: the "
                           "namespace of the CRs (`metadata.namespace`).")
    providers: dict[str, Provider] = Field(
        default_factory=dict, description="Ready upstream accounts by name. "
        "From every ProviderSecret whose credentials resolved.")
    routes: list[Route] = Field(
        default_factory=list, description="Served routes, by LLMRoute name. From every LLMRoute "
        "with at least one ready target.")
    virtual_keys: list[VirtualKey] = Field(
        default_factory=list, alias="virtualKeys", description="Keys, by name. From every "
        "VirtualKey whose key Secret exists (disabled and expired ones too, to refuse them "
        "with a reason).")

    def canonical_json(self) -> str:
        """The document as written: the oldest schema version that expresses this config,
        as deterministic JSON (sorted keys, no whitespace); equal configs, equal text."""
        return canonical(document(self))

    @property
    def generation(self) -> str:
        """Content hash of the canonical JSON; the version both volumes must agree on."""
        return content_hash(self.canonical_json())


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_config(text: str | bytes) -> Loaded:
    """Read a config document of any schema version this build reads, leaving out (and
    listing) fields it does not know (raises UnsupportedSchema, ValidationError, ValueError)."""
    return read(text, low=MIN_SCHEMA_VERSION, high=SCHEMA_VERSION)


def parse_config(text: str | bytes) -> CompiledConfig:
    """Parse and validate a config document (raises pydantic.ValidationError / ValueError)."""
    return read_config(text).config
