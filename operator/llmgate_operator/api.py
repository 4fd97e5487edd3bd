"""The custom resources as pydantic models (group llmgate.io, version v1alpha1): the one source.

Parsed once at the boundary (kopf handlers, `llmgate dev` file loading); everything after
works on these typed models. `crds/*.yaml` is generated from them (`crdgen`, `make crds`):
field descriptions, bounds, enums and the CEL rules (`cel_rules`) are declared here only.
No Kubernetes client here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

from llmgate_contract.config import BudgetPeriod, ErrorClass, Strategy
from llmgate_contract.patterns import check_patterns
from llmgate_contract.providers import REQUIRES_BASE_URL, ProviderKind
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.config import JsonDict

from llmgate_operator.group import API_VERSION as API_VERSION
from llmgate_operator.group import GROUP as GROUP
from llmgate_operator.group import VERSION as VERSION

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
DECIMAL_PATTERN = r"^[0-9]+(\.[0-9]{1,6})?$"
PARTITION_PATTERN = r"^(virtualKey|namespace|metadata\.[-_.a-zA-Z0-9]+)$"
RFC3339_PATTERN = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
                   r"(Z|[+-][0-9]{2}:[0-9]{2})$")
# Bounds the API server's CEL cost estimate of the rules over target lists.
MAX_TARGETS = 32
# spec.targets[] may be a group of groups of groups of leaves.
MAX_GROUP_DEPTH = 3

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_HINT = "A duration such as 500ms, 30s, 2m, 1h30m."


def parse_duration(text: str) -> float:
    """'1m30s' -> 90.0 seconds. Raises ValueError on anything else."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"invalid duration {text!r} (use e.g. 500ms, 30s, 2m, 1h)")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


@dataclass(frozen=True)
class CelRule:
    """An `x-kubernetes-validations` rule the API server evaluates on the object it sits on.

    Declared on the model (`cel_rules`) next to the pydantic validator that says the same."""

    rule: str
    message: str
    field_path: str | None = None
    reason: str | None = None

    def as_schema(self) -> dict[str, str]:
        extra = {"fieldPath": self.field_path, "reason": self.reason}
        return {"rule": self.rule, "message": self.message} | {
            k: v for k, v in extra.items() if v is not None}


@dataclass(frozen=True)
class Nesting:
    """How a self-referencing model is unrolled in the CRD (structural schemas have no $ref):
    `depth` levels may be groups; below them only the leaf form remains (no `group_fields`,
    `leaf_required` required, described by `leaf_description`)."""

    depth: int
    group_fields: tuple[str, ...]
    leaf_required: tuple[str, ...]
    leaf_description: str


def _kubernetes_extras(schema: dict[str, Any], cls: type[Any]) -> None:
    rules: Sequence[CelRule] = getattr(cls, "cel_rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [r.as_schema() for r in rules]
    nesting: Nesting | None = getattr(cls, "nesting", None)
    if nesting is not None:
        schema["x-llmgate-nesting"] = {
            "depth": nesting.depth, "groupFields": list(nesting.group_fields),
            "leafRequired": list(nesting.leaf_required),
            "leafDescription": nesting.leaf_description}


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True,
                              json_schema_extra=_kubernetes_extras)
    cel_rules: ClassVar[tuple[CelRule, ...]] = ()
    nesting: ClassVar[Nesting | None] = None


def _duration(description: str, **kwargs: Any) -> Any:
    return Field(pattern=DURATION_PATTERN, description=f"{description} {_DURATION_HINT}",
                 **kwargs)


def _secret_ref(alias: str, description: str) -> Any:
    return Field(default=None, alias=alias, description=description)


# --- ProviderSecret -------------------------------------------------------------------------

class SecretKeyRef(_Spec):
    """A key of a Secret in the same namespace."""

    name: str = Field(pattern=NAME_PATTERN, max_length=253, description="Name of the Secret.")
    key: str = Field(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253,
                     description="Data key inside the Secret.")


class SecretRef(_Spec):
    """Where a secret value is."""

    secret_key_ref: SecretKeyRef = Field(alias="secretKeyRef",
                                         description="A key of a Secret in the same namespace.")


class AwsIdentity(_Spec):
    """AWS identity for bedrock; without keys the pod's web identity is used."""

    cel_rules = (CelRule("has(self.accessKeyId) == has(self.secretAccessKey)",
                         "accessKeyId and secretAccessKey go together"),)

    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]+$",
                        description="AWS region, e.g. us-east-1.")
    access_key_id: SecretRef | None = _secret_ref("accessKeyId", "Access key id.")
    secret_access_key: SecretRef | None = _secret_ref("secretAccessKey", "Secret access key.")
    session_token: SecretRef | None = _secret_ref("sessionToken", "Session token (optional).")

    @model_validator(mode="after")
    def _pair(self) -> AwsIdentity:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("accessKeyId and secretAccessKey go together")
        return self


class GcpIdentity(_Spec):
    """GCP identity for vertex-ai."""

    project: str = Field(min_length=1, description="GCP project id.")
    location: str = Field(default="us-central1", min_length=1, description="Vertex AI location.")
    service_account_key: SecretRef | None = _secret_ref(
        "serviceAccountKey", "Service account key JSON (optional: workload identity otherwise).")


class AzureOptions(_Spec):
    """Azure OpenAI options."""

    api_version: str = Field(alias="apiVersion", pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(-preview)?$",
                             description="api-version query parameter, e.g. 2024-10-21.")


class PriceSpec(_Spec):
    """Prices of one model."""

    input_per_million: str = Field(alias="inputPerMillion", pattern=DECIMAL_PATTERN,
                                   description="USD per million input tokens.")
    output_per_million: str = Field(alias="outputPerMillion", pattern=DECIMAL_PATTERN,
                                    description="USD per million output tokens.")
    cached_input_per_million: str | None = Field(
        default=None, alias="cachedInputPerMillion", pattern=DECIMAL_PATTERN,
        description="USD per million input tokens read from the provider's prompt cache "
                    "(default: the input price).")
    cache_write_per_million: str | None = Field(
        default=None, alias="cacheWritePerMillion", pattern=DECIMAL_PATTERN,
        description="USD per million input tokens written to the provider's prompt cache "
                    "(default: the input price).")
    cache_write_1h_per_million: str | None = Field(
        default=None, alias="cacheWrite1hPerMillion", pattern=DECIMAL_PATTERN,
        description="USD per million input tokens written to the provider's 1-hour prompt "
                    "cache, Claude's at Anthropic or Bedrock (default: cacheWritePerMillion).")


class MockSpec(_Spec):
    """Behaviour of the built-in mock provider."""

    latency_ms: int = Field(default=0, ge=0, le=600_000, alias="latencyMs",
                            description="Delay before the first byte.")
    chunk_delay_ms: int = Field(default=0, ge=0, le=60_000, alias="chunkDelayMs",
                                description="Delay between streamed chunks.")
    words_per_chunk: int = Field(default=1, ge=1, le=1000, alias="wordsPerChunk",
                                 description="Words per streamed chunk.")
    reply: str | None = Field(default=None, max_length=100_000,
                              description="Fixed reply text (default: a deterministic echo).")


SECRET_HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,127}")
"""A `secretHeaders` name: it is also part of a credentials Secret key (`[-._a-zA-Z0-9]+`)."""

_NEEDS_BASE_URL = f"{', '.join(REQUIRES_BASE_URL[:-1])} and {REQUIRES_BASE_URL[-1]}"


class ProviderSecretSpec(_Spec):
    """One upstream account."""

    cel_rules = (CelRule(
        f"!(self.provider in [{', '.join(repr(p) for p in REQUIRES_BASE_URL)}])"
        " || has(self.baseURL)",
        f"baseURL is required for providers {_NEEDS_BASE_URL}",
        field_path=".baseURL", reason="FieldValueRequired"),)

    provider: ProviderKind = Field(description="The upstream's API flavour.")
    base_url: str | None = Field(
        default=None, alias="baseURL", pattern=r"^https?://.+",
        description=f"API base URL; required for {_NEEDS_BASE_URL}.")
    api_key: SecretRef | None = _secret_ref(
        "apiKey", "Where the API key is (any Secret: External Secrets, Sealed Secrets, Vault "
        "injectors).")
    aws: AwsIdentity | None = Field(
        default=None,
        description="AWS identity for bedrock; without keys the pod's web identity is used.")
    gcp: GcpIdentity | None = Field(default=None, description="GCP identity for vertex-ai.")
    azure: AzureOptions | None = Field(default=None, description="Azure OpenAI options.")
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Static extra headers sent upstream (their values are in the compiled "
                    "ConfigMap: put credentials in secretHeaders).")
    secret_headers: dict[str, SecretRef] = Field(
        default_factory=dict, alias="secretHeaders",
        description="Extra headers sent upstream whose values are credentials, by header name "
                    "(letters, digits and '-'): each value is read from a Secret key and goes "
                    "only to the credentials Secret, like apiKey.")
    pricing: dict[str, PriceSpec] = Field(
        default_factory=dict,
        description="Per-model price overrides in USD per million tokens (decimal strings).")
    mock: MockSpec | None = Field(default=None,
                                  description="Behaviour of the built-in mock provider.")

    @model_validator(mode="after")
    def _base_url_where_needed(self) -> ProviderSecretSpec:
        if self.provider in REQUIRES_BASE_URL and not self.base_url:
            raise ValueError(f"baseURL is required for provider {self.provider}")
        return self

    @model_validator(mode="after")
    def _secret_header_names(self) -> ProviderSecretSpec:
        seen = {h.lower() for h in self.headers}
        for header in self.secret_headers:
            if not SECRET_HEADER_NAME.fullmatch(header):
                raise ValueError(f"secretHeaders: {header!r} is not a header name of letters, "
                                 "digits and '-'")
            if header.lower() in seen:
                raise ValueError(f"secretHeaders: {header!r} is set twice (header names are "
                                 "case-insensitive; also not in headers)")
            seen.add(header.lower())
        return self


# --- LLMRoute -------------------------------------------------------------------------------

class TargetSpec(_Spec):
    """A leaf target (provider + model) or a nested group (strategy + targets)."""

    cel_rules = (CelRule(
        "has(self.targets) ? !(has(self.provider) || has(self.model))"
        " : (has(self.provider) && has(self.model))",
        "a target needs provider and model, or targets (a nested group), not both"),)
    nesting = Nesting(MAX_GROUP_DEPTH, ("strategy", "targets"), ("provider", "model"),
                      "A leaf target (the deepest level allowed: no further nesting).")

    provider: str | None = Field(default=None, pattern=NAME_PATTERN,
                                 description="Name of a ProviderSecret in this namespace.")
    model: str | None = Field(default=None, min_length=1,
                              description="Upstream model name sent to the provider.")
    weight: int = Field(default=1, ge=0, le=1_000_000,
                        description="Share of traffic under `loadbalance` (0 = standby).")
    timeout: str | None = _duration("Per-attempt timeout for this target.", default=None)
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Request defaults/overrides merged into the upstream request, e.g. "
                    "{max_tokens: 1024}.")
    strategy: Strategy | None = Field(default=None,
                                      description="Strategy of a nested group (default fallback).")
    targets: list[TargetSpec] | None = Field(
        default=None, min_length=1, max_length=MAX_TARGETS,
        description=f"Children of a nested group (groups nest up to {MAX_GROUP_DEPTH} levels).")

    @model_validator(mode="after")
    def _leaf_or_group(self) -> TargetSpec:
        if self.targets is None and (self.provider is None or self.model is None):
            raise ValueError("a target needs provider and model, or targets (a nested group)")
        if self.targets is not None and (self.provider is not None or self.model is not None):
            raise ValueError("a nested group has targets, not provider/model")
        return self


def _group_depth(targets: Sequence[TargetSpec]) -> int:
    return max((1 + _group_depth(t.targets) for t in targets if t.targets), default=0)


def _check_depth(targets: Sequence[TargetSpec]) -> None:
    if _group_depth(targets) > MAX_GROUP_DEPTH:
        raise ValueError(f"target groups nest at most {MAX_GROUP_DEPTH} levels deep")


class RuleMatchSpec(_Spec):
    """All given conditions must hold."""

    headers: dict[str, str] = Field(
        default_factory=dict, description="Request headers that must have these exact values.")
    metadata: dict[str, str] = Field(
        default_factory=dict,
        description="Request metadata (the x-llmgate-metadata JSON header) that must have "
                    "these values.")
    virtual_keys: list[str] = Field(default_factory=list, alias="virtualKeys",
                                    description="Names of VirtualKeys the rule applies to.")


class RuleSpec(_Spec):
    """A conditional routing rule; the first rule whose match holds wins."""

    match: RuleMatchSpec = Field(description="All given conditions must hold.")
    strategy: Strategy = Field(default="fallback", description="Strategy over this rule's targets.")
    targets: list[TargetSpec] = Field(min_length=1, max_length=MAX_TARGETS,
                                      description="Targets served when the rule matches.")

    @model_validator(mode="after")
    def _nesting(self) -> RuleSpec:
        _check_depth(self.targets)
        return self


class BackoffSpec(_Spec):
    """Exponential backoff with jitter between attempts."""

    initial: str = _duration("First delay.", default="200ms")
    max: str = _duration("Largest delay.", default="5s")


class RetrySpec(_Spec):
    """Retries of one target before falling back."""

    attempts: int = Field(default=1, ge=1, le=10,
                          description="Attempts per target, including the first.")
    backoff: BackoffSpec = Field(default_factory=BackoffSpec,
                                 description="Exponential backoff with jitter between attempts.")
    on_status: list[Annotated[int, Field(ge=400, le=599)]] | None = Field(
        default=None, alias="onStatus",
        description="Upstream HTTP statuses that are retried (default 429, 500, 502, 503, 504).")

    @field_validator("on_status", mode="before")
    @classmethod
    def _statuses(cls, v: Any) -> Any:
        # Before the schema's own bounds, for a message that says what the field is for.
        if isinstance(v, list) and any(isinstance(s, int) and not 400 <= s <= 599 for s in v):
            raise ValueError("onStatus holds HTTP error statuses (400-599)")
        return v


class CircuitBreakerSpec(_Spec):
    """Per-target circuit breaker."""

    failures: int = Field(default=5, ge=1, le=1000,
                          description="Failures within `window` that open the circuit.")
    window: str = _duration("Window in which failures are counted.", default="30s")
    cooldown: str = _duration("How long an open circuit skips the target.", default="30s")


class CacheSpec(_Spec):
    """Exact-match response cache."""

    mode: Literal["exact", "off"] = Field(default="off", description="exact or off.")
    ttl: str = _duration("How long an entry lives.", default="5m")
    partition_by: list[Annotated[str, Field(pattern=PARTITION_PATTERN)]] = Field(
        default_factory=lambda: ["virtualKey"], alias="partitionBy",
        description="Cache partitions: virtualKey, namespace or metadata.<key> "
                    "(default virtualKey).")

    @field_validator("partition_by", mode="before")
    @classmethod
    def _partitions(cls, v: Any) -> Any:
        # Before the schema's own pattern, for a message that lists what is allowed.
        for p in v if isinstance(v, list) else ():
            if isinstance(p, str) and not re.fullmatch(PARTITION_PATTERN, p):
                raise ValueError(
                    f"partitionBy entry {p!r}: use virtualKey, namespace or metadata.<key>")
        return v


PiiType = Literal["email", "phone", "creditCard", "iban", "ssn", "ip"]
PII_TYPES: tuple[PiiType, ...] = PiiType.__args__  # type: ignore[attr-defined]


class PiiSpec(_Spec):
    """PII detection."""

    action: Literal["redact", "block"] = Field(default="redact", description="redact or block.")
    types: list[PiiType] = Field(default_factory=lambda: list(PII_TYPES),
                                 description="PII kinds to detect (default all).")


class GuardrailsSpec(_Spec):
    """Input checks before a request leaves the pod."""

    pii: PiiSpec | None = Field(default=None, description="PII detection.")
    block_patterns: list[str] = Field(
        default_factory=list, alias="blockPatterns",
        description="Regular expressions that reject a request when they match its input.")
    max_input_tokens: int | None = Field(
        default=None, ge=1, alias="maxInputTokens",
        description="Reject requests whose estimated input is larger.")

    @field_validator("block_patterns")
    @classmethod
    def _linear_time(cls, v: list[str]) -> list[str]:
        return check_patterns(v)


class LLMRouteSpec(_Spec):
    """How one public model name is served."""

    model: str | None = Field(
        default=None, min_length=1, max_length=256,
        description="Public model name apps ask for (default: metadata.name).")
    aliases: list[str] = Field(default_factory=list,
                               description="More public names for this route.")
    strategy: Strategy = Field(
        default="fallback",
        description="How targets are chosen: fallback (in order), loadbalance (by weight), "
                    "least-busy, latency, cost.")
    targets: list[TargetSpec] = Field(
        min_length=1, max_length=MAX_TARGETS,
        description="Targets in order: leaves (provider + model) or nested groups.")
    rules: list[RuleSpec] = Field(
        default_factory=list, max_length=MAX_TARGETS,
        description="Conditional routing evaluated in order; first match wins.")
    retry: RetrySpec = Field(default_factory=RetrySpec,
                             description="Retries of one target before falling back.")
    fallback_on: list[ErrorClass] | None = Field(
        default=None, alias="fallbackOn",
        description="Error classes that move on to the next target (default rateLimit, "
                    "serverError, timeout, connectionError).")
    timeout: str | None = _duration(
        "Deadline for the whole request, all retries and fallbacks included.", default=None)
    circuit_breaker: CircuitBreakerSpec | None = Field(
        default=None, alias="circuitBreaker", description="Per-target circuit breaker.")
    cache: CacheSpec = Field(default_factory=CacheSpec, description="Exact-match response cache.")
    guardrails: GuardrailsSpec | None = Field(
        default=None, description="Input checks before a request leaves the pod.")

    @model_validator(mode="after")
    def _nesting(self) -> LLMRouteSpec:
        _check_depth(self.targets)
        return self


# --- VirtualKey -----------------------------------------------------------------------------

class BudgetSpec(_Spec):
    """USD budget per period."""

    limit: str = Field(pattern=DECIMAL_PATTERN,
                       description='USD, a decimal string such as "25.00".')
    period: BudgetPeriod = Field(default="30d", description="Budget period.")

    @property
    def amount(self) -> Decimal:
        return Decimal(self.limit)


class LimitsSpec(_Spec):
    """Rate limits, enforced across all replicas."""

    requests_per_minute: int | None = Field(default=None, ge=1, alias="requestsPerMinute",
                                            description="Requests per minute.")
    tokens_per_minute: int | None = Field(default=None, ge=1, alias="tokensPerMinute",
                                          description="Tokens per minute.")
    max_parallel: int | None = Field(default=None, ge=1, alias="maxParallel",
                                     description="Requests in flight at once.")


class VirtualKeySpec(_Spec):
    """An identity with a policy; the operator issues its key into a Secret."""

    models: list[str] = Field(
        default_factory=list,
        description="Public model names this key may use (empty = every route in the namespace).")
    budget: BudgetSpec | None = Field(default=None, description="USD budget per period.")
    limits: LimitsSpec = Field(default_factory=LimitsSpec,
                               description="Rate limits, enforced across all replicas.")
    expires_at: str | None = Field(
        default=None, alias="expiresAt", pattern=RFC3339_PATTERN,
        json_schema_extra={"format": "date-time"},
        description="RFC 3339 time after which the key is refused, e.g. 2027-01-01T00:00:00Z.")
    disabled: bool = Field(default=False, description="Refuse the key without deleting it.")
    metadata: dict[str, str] = Field(
        default_factory=dict,
        description="Labels of the key for cost attribution (team, cost center, app): "
                    "written on each of its requests' log line and span, next to the cost; "
                    "never metric labels.")
    secret_name: str | None = Field(
        default=None, alias="secretName", pattern=NAME_PATTERN,
        description="Secret that holds the key under data key api-key "
                    "(default <name>-llmgate-key).")

    @field_validator("expires_at", mode="before")
    @classmethod
    def _timestamp(cls, v: Any) -> Any:
        # Before the schema's own pattern, for a message with an example.
        if isinstance(v, str) and not re.fullmatch(RFC3339_PATTERN, v):
            raise ValueError("expiresAt must be an RFC 3339 date-time, e.g. 2027-01-01T00:00:00Z")
        return v


# --- status (written by the operator; the API server prunes what is not declared) -----------

_INT64: JsonDict = {"format": "int64"}
_DATE_TIME: JsonDict = {"format": "date-time"}


def _generation(description: str) -> Any:
    return Field(default=None, ge=0, alias="observedGeneration", json_schema_extra=_INT64,
                 description=description)


def _time(alias: str, description: str) -> Any:
    return Field(default=None, alias=alias, json_schema_extra=_DATE_TIME, description=description)


class ConditionStatus(_Spec):
    """One observation of the resource's state."""

    type: str = Field(max_length=316,
                      description="Condition type: Ready, Expired, BudgetExhausted.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str | None = Field(
        default=None, max_length=1024,
        description="CamelCase reason a person can act on, e.g. SecretNotFound.")
    message: str | None = Field(default=None, max_length=32768,
                                description="Human-readable details.")
    observed_generation: int | None = _generation(
        "metadata.generation this condition was computed from.")
    last_transition_time: str | None = _time("lastTransitionTime", "When status last changed.")


class LastGoodStatus(_Spec):
    """The last spec the operator accepted: served instead of a later invalid edit."""

    generation: int = Field(ge=0, json_schema_extra=_INT64,
                            description="metadata.generation of that spec.")
    spec: dict[str, Any] = Field(description="The spec as it was then.")


class _Status(_Spec):
    """Observed state, written by the operator."""

    observed_generation: int | None = _generation("metadata.generation last reconciled.")
    conditions: list[ConditionStatus] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        description="kstatus-compatible conditions; `Ready` summarises the resource.")
    last_good: LastGoodStatus | None = Field(
        default=None, alias="lastGood",
        description="The last valid spec: while the current one is invalid (Ready False, "
                    "InvalidSpec) this one stays in service, and survives operator restarts.")


class ProviderSecretStatus(_Status):
    """Observed state, written by the operator."""


class TargetStatus(_Spec):
    """One leaf target."""

    provider: str | None = Field(default=None, description="ProviderSecret name.")
    model: str | None = Field(default=None, description="Upstream model.")
    resolved: bool | None = Field(default=None,
                                  description="The ProviderSecret exists and is ready.")


class LLMRouteStatus(_Status):
    """Observed state, written by the operator."""

    targets: list[TargetStatus] = Field(
        default_factory=list,
        description="Every leaf target and whether its provider resolved.")


class SpendStatus(_Spec):
    """Spend of the current budget period, from the shared store."""

    amount: str | None = Field(default=None, description="USD spent this period (decimal string).")
    limit: str | None = Field(default=None,
                              description="USD budget of the period (decimal string).")
    period_start: str | None = _time("periodStart", "Start of the current period.")
    updated_at: str | None = _time(
        "updatedAt", "When these values were read (unchanged while the spend does not change).")


class VirtualKeyStatus(_Status):
    """Observed state, written by the operator."""

    key_prefix: str | None = Field(
        default=None, alias="keyPrefix",
        description="First characters of the current key, to recognise it in logs.")
    secret_name: str | None = Field(default=None, alias="secretName",
                                    description="Secret holding the key (data key api-key).")
    spend: SpendStatus | None = Field(
        default=None, description="Spend of the current budget period, from the shared store.")


# --- the resources --------------------------------------------------------------------------

@dataclass(frozen=True)
class PrinterColumn:
    """A `kubectl get` column."""

    name: str
    json_path: str
    type: str = "string"
    priority: int = 0


_READY = '.status.conditions[?(@.type=="Ready")]'
READY_COLUMNS = (PrinterColumn("Ready", f"{_READY}.status"),
                 PrinterColumn("Reason", f"{_READY}.reason"))
AGE_COLUMN = PrinterColumn("Age", ".metadata.creationTimestamp", "date")


@dataclass(frozen=True)
class Resource:
    """One custom resource kind: names, models and columns (the CRD is generated from this)."""

    kind: str
    plural: str
    short_name: str
    description: str
    spec: type[_Spec]
    status: type[_Spec]
    columns: tuple[PrinterColumn, ...]


RESOURCES: tuple[Resource, ...] = (
    Resource("ProviderSecret", "providersecrets", "lgps",
             "ProviderSecret: one upstream LLM account and where its credentials are.",
             ProviderSecretSpec, ProviderSecretStatus,
             (PrinterColumn("Provider", ".spec.provider"), *READY_COLUMNS,
              PrinterColumn("Base URL", ".spec.baseURL", priority=1), AGE_COLUMN)),
    Resource("LLMRoute", "llmroutes", "lgr",
             "LLMRoute: one public model name and how to serve it.",
             LLMRouteSpec, LLMRouteStatus,
             (PrinterColumn("Model", ".spec.model"), PrinterColumn("Strategy", ".spec.strategy"),
              *READY_COLUMNS, AGE_COLUMN)),
    Resource("VirtualKey", "virtualkeys", "lgvk",
             "VirtualKey: an identity with a policy (models, budget, limits, expiry).",
             VirtualKeySpec, VirtualKeyStatus,
             (PrinterColumn("Prefix", ".status.keyPrefix"),
              PrinterColumn("Budget", ".spec.budget.limit"),
              PrinterColumn("Spend", ".status.spend.amount"),
              PrinterColumn("Period", ".spec.budget.period", priority=1),
              *READY_COLUMNS, AGE_COLUMN)),
)

Kind = Literal["ProviderSecret", "LLMRoute", "VirtualKey"]
SPEC_MODELS: dict[str, type[_Spec]] = {r.kind: r.spec for r in RESOURCES}
PLURALS: dict[str, str] = {r.kind: r.plural for r in RESOURCES}

AnySpec = ProviderSecretSpec | LLMRouteSpec | VirtualKeySpec


def parse_spec(kind: str, spec: Any) -> AnySpec:
    """Validate a CR's `spec` for `kind` (raises pydantic.ValidationError / KeyError)."""
    return SPEC_MODELS[kind].model_validate(spec or {})  # type: ignore[return-value]


def default_secret_name(virtual_key: str) -> str:
    return f"{virtual_key}-llmgate-key"
