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
from typing import Annotated, Any, ClassVar, Literal, Self

import msgspec
from msgspec import Meta, field

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


class _Struct(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
              rename="camel"):
    """Base of the config's structs (msgspec): immutable, built by keyword, JSON names in
    camelCase unless a field says `name=`, unknown keys refused (`versions.read` leaves out
    and lists a newer operator's additions before it validates). Constructing one does not
    validate its values (the operator builds them from validated CRs); `from_data` and
    reading a document do, against each field's type and `Meta` bounds."""

    @classmethod
    def from_data(cls, data: Any) -> Self:
        """Validate JSON-like `data` (keys by JSON name) into this struct (raises
        `msgspec.ValidationError`, a ValueError, naming the path of the problem)."""
        return msgspec.convert(data, cls)

    def to_data(self) -> dict[str, Any]:
        """Every field as JSON-like data, keys by JSON name (money as decimal strings)."""
        data: dict[str, Any] = msgspec.to_builtins(self)
        return data

    def to_json(self) -> str:
        """`to_data` as compact JSON, fields in declaration order."""
        return msgspec.json.encode(self).decode()

    def replace(self, **changes: Any) -> Self:
        """A copy with `changes` (by attribute name)."""
        return msgspec.structs.replace(self, **changes)


class Price(_Struct, frozen=True, kw_only=True):
    """USD per million tokens of one upstream model. Decimals, never floats: this is money."""

    input_per_million: Annotated[Decimal, Meta(
        description="USD per million input (prompt) tokens. "
        "From `ProviderSecret.spec.pricing{}.inputPerMillion`.")]
    output_per_million: Annotated[Decimal, Meta(
        description="USD per million output (completion) tokens. "
        "From `ProviderSecret.spec.pricing{}.outputPerMillion`.")]
    cached_input_per_million: Annotated[Decimal | None, Meta(
        description="USD per million input tokens read from the upstream's prompt cache; "
        "None bills them as ordinary input. "
        "From `ProviderSecret.spec.pricing{}.cachedInputPerMillion`.")] = None
    cache_write_per_million: Annotated[Decimal | None, Meta(extra=since(2),
        description="USD per million input tokens written to the upstream's prompt cache; "
        "None bills them as ordinary input. Schema version 2 (a sidecar that reads only 1 "
        "would bill the writes as input, so a config that sets it is written as 2). "
        "From `ProviderSecret.spec.pricing{}.cacheWritePerMillion`.")] = None
    cache_write_1h_per_million: Annotated[Decimal | None, Meta(extra=since(2),
        description="USD per million input tokens written to the upstream's 1-hour prompt "
        "cache (Claude at Anthropic or Bedrock); None bills them as other cache writes. "
        "Schema version 2. "
        "From `ProviderSecret.spec.pricing{}.cacheWrite1hPerMillion`.")] = field(
        default=None, name="cacheWrite1hPerMillion")  # "camel" would write 1H


class MockOptions(_Struct, frozen=True, kw_only=True):
    """Behaviour of the built-in `mock` provider (demos, tests, load tests)."""

    latency_ms: Annotated[int, Meta(ge=0,
        description="Milliseconds before the first byte. "
        "From `ProviderSecret.spec.mock.latencyMs`.")] = 0
    chunk_delay_ms: Annotated[int, Meta(ge=0,
        description="Milliseconds between streamed chunks. "
        "From `ProviderSecret.spec.mock.chunkDelayMs`.")] = 0
    words_per_chunk: Annotated[int, Meta(ge=1,
        description="Words per streamed chunk. From `ProviderSecret.spec.mock.wordsPerChunk`.")] = 1
    reply: Annotated[str | None, Meta(
        description="Fixed reply text; None echoes the request deterministically. "
        "From `ProviderSecret.spec.mock.reply`.")] = None


class Provider(_Struct, frozen=True, kw_only=True):
    """One upstream account. Credentials are named by file in the credentials volume."""

    name: Annotated[str, Meta(
        description="The account's name, which targets refer to. "
        "From `ProviderSecret.metadata.name`.")]
    kind: Annotated[ProviderKind, Meta(
        description="Which upstream API (and adapter) this is. "
        "From `ProviderSecret.spec.provider`.")]
    base_url: Annotated[str | None, Meta(
        description="API base URL; None uses the kind's public endpoint. "
        "From `ProviderSecret.spec.baseURL`.")] = field(default=None, name="baseURL")
    api_key_file: Annotated[str | None, Meta(
        description="File in the credentials volume holding the API key (`<name>.api-key`); "
        "None: no key. From `ProviderSecret.spec.apiKey` (the Secret's value is copied "
        "there).")] = None
    headers: Annotated[dict[str, str], Meta(
        description="Extra headers sent on every upstream request. "
        "From `ProviderSecret.spec.headers`.")] = {}
    header_files: Annotated[dict[str, str], Meta(extra=since(2),
        description="Extra headers whose values are credentials: header name -> file in the "
        "credentials volume holding the value (`<name>.header.<lowercased name>`). Schema "
        "version 2. From `ProviderSecret.spec.secretHeaders` (the Secret's value is copied "
        "there, never into the config).")] = {}
    pricing: Annotated[dict[str, Price], Meta(
        description="Prices by upstream model name; they override the built-in price table. "
        "From `ProviderSecret.spec.pricing`.")] = {}
    azure_api_version: Annotated[str | None, Meta(
        description="Azure OpenAI `api-version` query parameter. "
        "From `ProviderSecret.spec.azure.apiVersion`.")] = None
    aws_region: Annotated[str | None, Meta(
        description="AWS region of the Bedrock endpoint and of request signing. "
        "From `ProviderSecret.spec.aws.region`.")] = None
    aws_files: Annotated[dict[str, str], Meta(
        description="Credential file by role (`aws-access-key-id`, `aws-secret-access-key`, "
        "`aws-session-token`); empty: the pod's web identity through STS. "
        "From `ProviderSecret.spec.aws.accessKeyId`, `ProviderSecret.spec.aws.secretAccessKey` "
        "and `ProviderSecret.spec.aws.sessionToken`.")] = {}
    gcp_project: Annotated[str | None, Meta(
        description="GCP project of the Vertex AI endpoint. "
        "From `ProviderSecret.spec.gcp.project`.")] = None
    gcp_location: Annotated[str | None, Meta(
        description="Vertex AI location (region). From `ProviderSecret.spec.gcp.location`.")] = None
    gcp_key_file: Annotated[str | None, Meta(
        description="File holding the service account key JSON; None: workload identity. "
        "From `ProviderSecret.spec.gcp.serviceAccountKey`.")] = None
    mock: Annotated[MockOptions | None, Meta(
        description="Behaviour of the `mock` kind. From `ProviderSecret.spec.mock`.")] = None


class Target(_Struct, frozen=True, kw_only=True, tag_field="type", tag="target"):
    """A leaf of the target tree: one provider account and the upstream model name."""

    TAG_DESCRIPTION: ClassVar[str] = ("Tree node discriminator. Set by the operator: a target "
                                      "with provider and model.")
    provider: Annotated[str, Meta(
        description="Name of the Provider (key of `providers`) to call. "
        "From `LLMRoute.spec.targets[].provider` (at any depth, also under "
        "`LLMRoute.spec.rules[].targets[]`).")]
    model: Annotated[str, Meta(
        description="Model name sent upstream. "
        "From `LLMRoute.spec.targets[].model`.")]
    weight: Annotated[int, Meta(
        description="Share of traffic under `loadbalance`; 0 is a "
        "standby. From `LLMRoute.spec.targets[].weight`.")] = 1
    timeout: Annotated[float | None, Meta(
        description="Per-attempt timeout in seconds; None: only the route's "
        "deadline. From `LLMRoute.spec.targets[].timeout` (a duration string).")] = None
    params: Annotated[dict[str, Any], Meta(
        description="Request defaults merged into the upstream body; "
        "`max_tokens`/`max_completion_tokens` are ceilings. "
        "From `LLMRoute.spec.targets[].params`.")] = {}


class Group(_Struct, frozen=True, kw_only=True, tag_field="type", tag="group"):
    """An inner node of the target tree: a strategy over children (groups nest)."""

    TAG_DESCRIPTION: ClassVar[str] = ("Tree node discriminator. Set by the operator: the "
                                      "route's (or rule's) top level and every nested group.")
    strategy: Annotated[Strategy, Meta(
        description="How a child is chosen. From `LLMRoute.spec.strategy`, "
        "`LLMRoute.spec.rules[].strategy` or `LLMRoute.spec.targets[].strategy` "
        "(nested group).")] = "fallback"
    weight: Annotated[int, Meta(
        description="This group's share under a `loadbalance` "
        "parent. From `LLMRoute.spec.targets[].weight` (1 at the top).")] = 1
    targets: Annotated[list[Target | Group], Meta(
        description="Children in order; targets whose provider is not ready are left out. "
        "From `LLMRoute.spec.targets` or `LLMRoute.spec.rules[].targets`.")]


class RuleMatch(_Struct, frozen=True, kw_only=True):
    """Conditions of a rule; all given ones must hold."""

    headers: Annotated[dict[str, str], Meta(
        description="Request headers that must have these exact values. "
        "From `LLMRoute.spec.rules[].match.headers`.")] = {}
    metadata: Annotated[dict[str, str], Meta(
        description="Request metadata (the `x-llmgate-metadata` JSON "
        "header) that must have these values. From `LLMRoute.spec.rules[].match.metadata`.")] = {}
    virtual_keys: Annotated[list[str], Meta(
        description="Names of the calling keys the "
        "rule applies to; empty: any. From `LLMRoute.spec.rules[].match.virtualKeys`.")] = []


class Rule(_Struct, frozen=True, kw_only=True):
    """A conditional target tree; the first rule whose match holds serves the request."""

    match: Annotated[RuleMatch, Meta(
        description="When the rule applies. "
        "From `LLMRoute.spec.rules[].match`.")]
    group: Annotated[Group, Meta(
        description="What serves a matching request. "
        "From `LLMRoute.spec.rules[].strategy` and "
        "`LLMRoute.spec.rules[].targets`.")]


class Backoff(_Struct, frozen=True, kw_only=True):
    """Exponential backoff with jitter between attempts on one target."""

    initial: Annotated[float, Meta(
        description="First delay in seconds. "
        "From `LLMRoute.spec.retry.backoff.initial` (a duration string).")] = 0.2
    max: Annotated[float, Meta(
        description="Largest delay in seconds. "
        "From `LLMRoute.spec.retry.backoff.max` (a duration string).")] = 5.0


class Retry(_Struct, frozen=True, kw_only=True):
    """Retries of one target before the route moves on."""

    attempts: Annotated[int, Meta(
        description="Attempts per target, the first included. "
        "From `LLMRoute.spec.retry.attempts`.")] = 1
    backoff: Annotated[Backoff, Meta(
        description="Delay between attempts. "
        "From `LLMRoute.spec.retry.backoff`.")] = field(default_factory=Backoff)
    on_status: Annotated[list[int], Meta(
        description="Upstream HTTP statuses that are retried. "
        "From `LLMRoute.spec.retry.onStatus` (default 429, 500, 502, 503, 504).")] = field(
        default_factory=lambda: [429, 500, 502, 503, 504])


class CircuitBreaker(_Struct, frozen=True, kw_only=True):
    """Per-target breaker: `failures` within `window` skip the target for `cooldown`."""

    failures: Annotated[int, Meta(
        description="Failures that open the circuit. "
        "From `LLMRoute.spec.circuitBreaker.failures`.")] = 5
    window: Annotated[float, Meta(
        description="Seconds in which failures are counted. "
        "From `LLMRoute.spec.circuitBreaker.window` (a duration string).")] = 30.0
    cooldown: Annotated[float, Meta(
        description="Seconds an open circuit skips the "
        "target. From `LLMRoute.spec.circuitBreaker.cooldown` "
        "(a duration string).")] = 30.0


class Cache(_Struct, frozen=True, kw_only=True):
    """Exact-match response cache of a route."""

    mode: Annotated[Literal["exact", "off"], Meta(
        description="`exact` caches answers "
        "by request; `off` does not. "
        "From `LLMRoute.spec.cache.mode`.")] = "off"
    ttl: Annotated[float, Meta(
        description="Seconds an entry lives. "
        "From `LLMRoute.spec.cache.ttl` (a duration string).")] = 300.0
    partition_by: Annotated[list[str], Meta(
        description="What separates cache entries: virtualKey, namespace, metadata.<key>. "
        "From `LLMRoute.spec.cache.partitionBy`.")] = field(default_factory=lambda: ["virtualKey"])


class Pii(_Struct, frozen=True, kw_only=True):
    """PII detection on request input."""

    action: Annotated[Literal["redact", "block"], Meta(
        description="Redact matches before the request leaves, or refuse it. "
        "From `LLMRoute.spec.guardrails.pii.action`.")] = "redact"
    types: Annotated[list[str], Meta(
        description="PII kinds to detect; empty: "
        "all. From `LLMRoute.spec.guardrails.pii.types`.")] = []


class Guardrails(_Struct, frozen=True, kw_only=True):
    """Input checks before a request leaves the pod."""

    pii: Annotated[Pii | None, Meta(
        description="PII detection; None: off. "
        "From `LLMRoute.spec.guardrails.pii`.")] = None
    block_patterns: Annotated[list[str], Meta(
        description="RE2 patterns that refuse a request whose input matches. "
        "From `LLMRoute.spec.guardrails.blockPatterns`.")] = []
    max_input_tokens: Annotated[int | None, Meta(
        description="Refuse requests whose estimated input is larger; None: no ceiling. "
        "From `LLMRoute.spec.guardrails.maxInputTokens`.")] = None

    def __post_init__(self) -> None:
        # A config carrying a pattern RE2 cannot bound is refused on load, not at match time.
        check_patterns(self.block_patterns)


class Route(_Struct, frozen=True, kw_only=True):
    """A public model name (and aliases) resolved to a target tree."""

    name: Annotated[str, Meta(
        description="The route's name, for logs and metrics. "
        "From `LLMRoute.metadata.name`.")]
    model: Annotated[str, Meta(
        description="Public model name apps ask for. "
        "From `LLMRoute.spec.model` (default `LLMRoute.metadata.name`).")]
    aliases: Annotated[list[str], Meta(
        description="More public names, sorted. "
        "From `LLMRoute.spec.aliases`.")] = []
    group: Annotated[Group, Meta(
        description="The target tree when no rule matches. "
        "From `LLMRoute.spec.strategy` and `LLMRoute.spec.targets`.")]
    rules: Annotated[list[Rule], Meta(
        description="Conditional trees, tried in "
        "order before `group`. From `LLMRoute.spec.rules`.")] = []
    retry: Annotated[Retry, Meta(
        description="Retries per target. "
        "From `LLMRoute.spec.retry`.")] = field(default_factory=Retry)
    fallback_on: Annotated[list[ErrorClass], Meta(
        description="Error classes that move on to the next target; others answer the client. "
        "From `LLMRoute.spec.fallbackOn`.")] = field(
        default_factory=lambda: list(DEFAULT_FALLBACK_ON))
    timeout: Annotated[float | None, Meta(
        description="Deadline in seconds for the whole request, retries and "
        "fallbacks included; None: none. From `LLMRoute.spec.timeout` (a duration string).")] = None
    circuit_breaker: Annotated[CircuitBreaker | None, Meta(
        description="Per-target breaker; None: off. "
        "From `LLMRoute.spec.circuitBreaker`.")] = None
    cache: Annotated[Cache, Meta(
        description="Response cache. "
        "From `LLMRoute.spec.cache`.")] = field(default_factory=Cache)
    guardrails: Annotated[Guardrails | None, Meta(
        description="Input checks; None: "
        "off. From `LLMRoute.spec.guardrails`.")] = None


class Budget(_Struct, frozen=True, kw_only=True):
    """A USD budget per period, shared by all replicas."""

    limit: Annotated[Decimal, Meta(
        description="USD per period. From `VirtualKey.spec.budget.limit`.")]
    period: Annotated[BudgetPeriod, Meta(
        description="When spend resets. "
        "From `VirtualKey.spec.budget.period`.")] = "30d"


class Limits(_Struct, frozen=True, kw_only=True):
    """Rate limits of a key, enforced across all replicas; None: unlimited."""

    requests_per_minute: Annotated[int | None, Meta(
        description="Requests per minute. "
        "From `VirtualKey.spec.limits.requestsPerMinute`.")] = None
    tokens_per_minute: Annotated[int | None, Meta(
        description="Tokens (input and output) per "
        "minute. From `VirtualKey.spec.limits.tokensPerMinute`.")] = None
    max_parallel: Annotated[int | None, Meta(
        description="Requests in flight at once. "
        "From `VirtualKey.spec.limits.maxParallel`.")] = None


class KeyHash(_Struct, frozen=True, kw_only=True):
    """SHA-256 (hex) of a virtual key; `not_after` bounds a rotated-out key's grace period."""

    sha256: Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 of the key, hex. "
        "Set by the operator: from the key Secret named by "
        "`VirtualKey.spec.secretName` (its current or previous key).")]
    not_after: Annotated[str | None, Meta(
        description="RFC 3339 time after which a rotated-out "
        "key is refused; None: the current key. Set by the operator: rotation time plus the "
        "`llmgate.io/rotation-grace` annotation of the VirtualKey.")] = None


class VirtualKey(_Struct, frozen=True, kw_only=True):
    """An identity and its policy; the key itself is only here as hashes."""

    name: Annotated[str, Meta(
        description="The key's name, in logs, metrics and rules. "
        "From `VirtualKey.metadata.name`.")]
    hashes: Annotated[list[KeyHash], Meta(
        description="Hashes of the keys that authenticate as this "
        "identity (the current one, and the previous one during a rotation). "
        "Set by the operator: from the key Secret.")] = []
    key_prefix: Annotated[str | None, Meta(
        description="First characters of the current key, to "
        "recognise it in logs. Set by the operator: from the key Secret.")] = None
    models: Annotated[list[str], Meta(
        description="Public model names the key may use, sorted; empty: "
        "every route. From `VirtualKey.spec.models`.")] = []
    budget: Annotated[Budget | None, Meta(
        description="USD budget; None: unlimited. "
        "From `VirtualKey.spec.budget`.")] = None
    limits: Annotated[Limits, Meta(
        description="Rate limits. "
        "From `VirtualKey.spec.limits`.")] = field(default_factory=Limits)
    expires_at: Annotated[str | None, Meta(
        description="RFC 3339 time after which the key is "
        "refused; None: never. From `VirtualKey.spec.expiresAt`.")] = None
    disabled: Annotated[bool, Meta(
        description="Refuse the key. "
        "From `VirtualKey.spec.disabled`.")] = False
    metadata: Annotated[dict[str, str], Meta(
        description="Labels of the key for cost attribution: the sidecar writes them on "
        "each of the key's request log lines (`key_metadata`) and spans, never as metric "
        "labels. From `VirtualKey.spec.metadata`.")] = {}


class CompiledConfig(_Struct, frozen=True, kw_only=True):
    """Everything one namespace's sidecars need, minus secret values."""

    schema_version: Annotated[int, Meta(ge=1,
        description="Version of this "
        "document's shape; a sidecar refuses one outside the range it reads. Set by the "
        "operator: the oldest version that expresses the config (`versions.document`).")] = (
        SCHEMA_VERSION)
    namespace: Annotated[str, Meta(
        description="The namespace compiled. Set by the operator: the "
        "namespace of the CRs (`metadata.namespace`).")]
    providers: Annotated[dict[str, Provider], Meta(
        description="Ready upstream accounts by name. "
        "From every ProviderSecret whose credentials resolved.")] = {}
    routes: Annotated[list[Route], Meta(
        description="Served routes, by LLMRoute name. From every LLMRoute "
        "with at least one ready target.")] = []
    virtual_keys: Annotated[list[VirtualKey], Meta(
        description="Keys, by name. From every "
        "VirtualKey whose key Secret exists (disabled and expired ones too, to refuse them "
        "with a reason).")] = []

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
    listing) fields it does not know (raises UnsupportedSchema or another ValueError)."""
    return read(text, low=MIN_SCHEMA_VERSION, high=SCHEMA_VERSION)


def parse_config(text: str | bytes) -> CompiledConfig:
    """Parse and validate a config document (raises ValueError, msgspec.ValidationError
    among them)."""
    return read_config(text).config
