"""Compile one namespace's CRs (and the Secrets they reference) into the compiled config.

Pure: CR dicts and decoded Secret data in, `Compilation` out (config, credential files, one
condition per CR). Used by the kopf handlers and by `llmgate dev`, so both serve the same
thing. Output is deterministic (sorted, canonical) so GitOps sees no churn. No I/O here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from llmgate_contract import config as c
from llmgate_contract.providers import KINDS
from pydantic import ValidationError

from llmgate_operator import api

API_KEY_DATA_KEY = "api-key"
PREVIOUS_HASH_DATA_KEY = "previous-sha256"
PREVIOUS_NOT_AFTER_DATA_KEY = "previous-not-after"


@dataclass(frozen=True)
class Condition:
    """The outcome for one CR: becomes its `Ready` condition (and an Event when it changes)."""

    ready: bool
    reason: str
    message: str
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Compilation:
    config: c.CompiledConfig
    credentials: dict[str, str]
    conditions: dict[tuple[str, str], Condition]
    accepted: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    """`status.lastGood` to keep per CR: {generation, spec} of each CR whose current spec
    compiled (an invalid edit later serves this one instead)."""


def compile_namespace(
    namespace: str,
    resources: Iterable[Mapping[str, Any]],
    secrets: Mapping[str, Mapping[str, str]],
    *,
    now: datetime,
) -> Compilation:
    """Compile CR bodies (any of the three kinds) of `namespace` with its decoded Secrets."""
    by_kind: dict[str, list[tuple[str, api.AnySpec]]] = {k: [] for k in api.SPEC_MODELS}
    conditions: dict[tuple[str, str], Condition] = {}
    stale: dict[tuple[str, str], Condition] = {}
    accepted: dict[tuple[str, str], dict[str, Any]] = {}
    fallbacks: dict[str, tuple[int, api.ProviderSecretSpec]] = {}
    for body in sorted(resources, key=lambda b: (b["kind"], b["metadata"]["name"])):
        kind, name = body["kind"], body["metadata"]["name"]
        previous = last_good(body)
        try:
            spec = api.parse_spec(kind, body.get("spec"))
        except ValidationError as exc:
            if previous is None:
                conditions[(kind, name)] = Condition(False, "InvalidSpec", describe_errors(exc))
                continue
            spec = previous[1]
            stale[(kind, name)] = _serving_previous(describe_errors(exc), previous[0])
        else:
            generation = body["metadata"].get("generation")
            if isinstance(generation, int):
                accepted[(kind, name)] = {"generation": generation,
                                          "spec": dict(body.get("spec") or {})}
            if previous is not None and isinstance(previous[1], api.ProviderSecretSpec):
                fallbacks[name] = (previous[0], previous[1])  # if this one lacks credentials
        by_kind[kind].append((name, spec))

    providers: dict[str, c.Provider] = {}
    credentials: dict[str, str] = {}
    for name, spec in by_kind["ProviderSecret"]:
        assert isinstance(spec, api.ProviderSecretSpec)
        outcome = _provider(name, spec, secrets)
        if isinstance(outcome, Condition) and outcome.reason == "MissingCredentials" \
                and name in fallbacks:
            # An edit that dropped the credentials a provider needs: an invalid edit too.
            accepted.pop(("ProviderSecret", name), None)
            generation, previous_spec = fallbacks[name]
            stale[("ProviderSecret", name)] = _serving_previous(outcome.message, generation)
            outcome = _provider(name, previous_spec, secrets)
        if isinstance(outcome, Condition):
            if outcome.reason == "MissingCredentials":
                accepted.pop(("ProviderSecret", name), None)
            conditions[("ProviderSecret", name)] = outcome
            continue
        provider, files = outcome
        providers[name] = provider
        credentials.update(files)
        conditions[("ProviderSecret", name)] = Condition(True, "Resolved", "credentials found")

    routes: list[c.Route] = []
    claimed: dict[str, str] = {}
    for name, spec in by_kind["LLMRoute"]:
        assert isinstance(spec, api.LLMRouteSpec)
        route, condition = _route(name, spec, providers, claimed)
        conditions[("LLMRoute", name)] = condition
        if route is not None:
            routes.append(route)
            for public in (route.model, *route.aliases):
                claimed[public] = name

    keys: list[c.VirtualKey] = []
    for name, spec in by_kind["VirtualKey"]:
        assert isinstance(spec, api.VirtualKeySpec)
        outcome_key = _virtual_key(name, spec, secrets, now)
        if isinstance(outcome_key, Condition):
            conditions[("VirtualKey", name)] = outcome_key
            continue
        key, condition = outcome_key
        keys.append(key)
        conditions[("VirtualKey", name)] = condition

    for cr, invalid in stale.items():
        # Ready stays False with the edit's errors; what the old spec compiled to is kept
        # (e.g. an LLMRoute's targets) for the status.
        served = conditions.get(cr)
        conditions[cr] = Condition(False, invalid.reason, invalid.message,
                                   {**(served.extra if served else {}), **invalid.extra})
    config = c.CompiledConfig(namespace=namespace, providers=providers, routes=routes,
                              virtual_keys=keys)
    return Compilation(config=config, credentials=credentials, conditions=conditions,
                       accepted=accepted)


def last_good(body: Mapping[str, Any]) -> tuple[int, api.AnySpec] | None:
    """(generation, parsed spec) of a CR's `status.lastGood`, if it has a usable one."""
    status = body.get("status")
    saved = status.get("lastGood") if isinstance(status, Mapping) else None
    if not isinstance(saved, Mapping) or not isinstance(saved.get("generation"), int):
        return None
    try:
        return saved["generation"], api.parse_spec(body["kind"], saved.get("spec"))
    except (ValidationError, KeyError):
        return None  # written by an older operator whose rules were looser: not servable


def _serving_previous(problem: str, generation: int) -> Condition:
    return Condition(False, "InvalidSpec",
                     f"{problem}; still serving generation {generation}, the last valid spec",
                     {"servedGeneration": generation})


def secret_keys(body: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(Secret name, data key) pairs a CR body reads, from its raw spec (valid or not) and
    its last good spec (which may be the one in service)."""
    spec = body.get("spec") or {}
    if not isinstance(spec, Mapping):
        return set()
    status = body.get("status")
    saved = status.get("lastGood") if isinstance(status, Mapping) else None
    specs = [spec] + ([saved["spec"]] if isinstance(saved, Mapping)
                      and isinstance(saved.get("spec"), Mapping) else [])
    if body.get("kind") == "VirtualKey":
        name = body["metadata"]["name"]
        return {(s.get("secretName") if isinstance(s.get("secretName"), str)
                 else api.default_secret_name(name), API_KEY_DATA_KEY) for s in specs}
    if body.get("kind") == "ProviderSecret":
        return {ref for s in specs for ref in _refs(s)}
    return set()


def _refs(node: Any) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    if isinstance(node, Mapping):
        ref = node.get("secretKeyRef")
        if isinstance(ref, Mapping) and isinstance(ref.get("name"), str):
            found.add((ref["name"], str(ref.get("key", ""))))
        for value in node.values():
            found |= _refs(value)
    return found


def describe_errors(exc: ValidationError) -> str:
    """A one-line, person-readable summary of a spec's validation errors."""
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "spec"
        parts.append(f"spec.{where}: {err['msg']}" if where != "spec" else err["msg"])
    return "; ".join(parts)


def _secret_value(
    ref: api.SecretRef, secrets: Mapping[str, Mapping[str, str]]
) -> str | Condition:
    name, key = ref.secret_key_ref.name, ref.secret_key_ref.key
    if name not in secrets:
        return Condition(False, "SecretNotFound", f"Secret {name!r} does not exist")
    if key not in secrets[name]:
        return Condition(False, "SecretKeyNotFound", f"Secret {name!r} has no key {key!r}")
    value = secrets[name][key]
    if not value.strip():
        return Condition(False, "SecretKeyEmpty", f"Secret {name!r} key {key!r} is empty")
    return value.strip()


def _provider(
    name: str, spec: api.ProviderSecretSpec, secrets: Mapping[str, Mapping[str, str]]
) -> tuple[c.Provider, dict[str, str]] | Condition:
    files: dict[str, str] = {}
    refs: dict[str, api.SecretRef | None] = {"api-key": spec.api_key}
    if spec.aws is not None:
        refs |= {"aws-access-key-id": spec.aws.access_key_id,
                 "aws-secret-access-key": spec.aws.secret_access_key,
                 "aws-session-token": spec.aws.session_token}
    if spec.gcp is not None:
        refs["gcp-service-account-key"] = spec.gcp.service_account_key
    header_files = {h: f"{name}.header.{h.lower()}" for h in sorted(spec.secret_headers)}
    refs |= {f"header.{h.lower()}": ref for h, ref in spec.secret_headers.items()}
    for suffix, ref in refs.items():
        if ref is None:
            continue
        value = _secret_value(ref, secrets)
        if isinstance(value, Condition):
            return value
        files[f"{name}.{suffix}"] = value
    missing = _missing_credentials(spec)
    if missing is not None:
        return Condition(False, "MissingCredentials",
                         f"provider {spec.provider} needs {missing}")
    provider = c.Provider(
        name=name, kind=spec.provider, base_url=spec.base_url,
        api_key_file=f"{name}.api-key" if spec.api_key else None,
        headers=dict(spec.headers), header_files=header_files,
        pricing={m: c.Price(input_per_million=Decimal(p.input_per_million),
                            output_per_million=Decimal(p.output_per_million),
                            cached_input_per_million=(Decimal(p.cached_input_per_million)
                                                      if p.cached_input_per_million else None),
                            cache_write_per_million=(Decimal(p.cache_write_per_million)
                                                     if p.cache_write_per_million else None),
                            cache_write_1h_per_million=(
                                Decimal(p.cache_write_1h_per_million)
                                if p.cache_write_1h_per_million else None))
                 for m, p in sorted(spec.pricing.items())},
        azure_api_version=spec.azure.api_version if spec.azure else None,
        aws_region=spec.aws.region if spec.aws else None,
        aws_files={k: f"{name}.{k}" for k in ("aws-access-key-id", "aws-secret-access-key",
                                               "aws-session-token") if f"{name}.{k}" in files},
        gcp_project=spec.gcp.project if spec.gcp else None,
        gcp_location=spec.gcp.location if spec.gcp else None,
        gcp_key_file=(f"{name}.gcp-service-account-key"
                      if f"{name}.gcp-service-account-key" in files else None),
        mock=(c.MockOptions.from_data(spec.mock.model_dump(by_alias=True)) if spec.mock
              else None),
    )
    return provider, files


def _missing_credentials(spec: api.ProviderSecretSpec) -> str | None:
    """The credentials field the kind needs (`llmgate_contract.providers.KINDS`) when unset."""
    needs = KINDS[spec.provider].credentials
    if needs == "api-key" and spec.api_key is None:
        return "spec.apiKey.secretKeyRef"
    if needs == "aws" and spec.aws is None:
        return "spec.aws"
    if needs == "gcp" and spec.gcp is None:
        return "spec.gcp"
    return None


def _group(
    strategy: c.Strategy, targets: list[api.TargetSpec], providers: Mapping[str, c.Provider],
    report: list[dict[str, Any]], weight: int = 1,
) -> c.Group | None:
    children: list[c.Target | c.Group] = []
    for t in targets:
        if t.targets is not None:
            nested = _group(t.strategy or "fallback", t.targets, providers, report, t.weight)
            if nested is not None:
                children.append(nested)
            continue
        assert t.provider is not None and t.model is not None
        resolved = t.provider in providers
        report.append({"provider": t.provider, "model": t.model, "resolved": resolved})
        if resolved:
            children.append(c.Target(
                provider=t.provider, model=t.model, weight=t.weight,
                timeout=api.parse_duration(t.timeout) if t.timeout else None,
                params=dict(t.params)))
    if not children:
        return None
    return c.Group(strategy=strategy, weight=weight, targets=children)


def _route(
    name: str, spec: api.LLMRouteSpec, providers: Mapping[str, c.Provider],
    claimed: Mapping[str, str],
) -> tuple[c.Route | None, Condition]:
    model = spec.model or name
    taken = [(n, claimed[n]) for n in (model, *spec.aliases) if n in claimed]
    if taken:
        public, owner = taken[0]
        return None, Condition(False, "DuplicateModel",
                               f"model name {public!r} is already served by LLMRoute {owner!r}")
    report: list[dict[str, Any]] = []
    group = _group(spec.strategy, spec.targets, providers, report)
    rules = []
    for rule in spec.rules:
        rule_group = _group(rule.strategy, rule.targets, providers, report)
        if rule_group is not None:
            match = c.RuleMatch.from_data(rule.match.model_dump(by_alias=True))
            rules.append(c.Rule(match=match, group=rule_group))
    unresolved = sorted({t["provider"] for t in report if not t["resolved"]})
    extra = {"targets": report}
    if group is None:
        return None, Condition(False, "NoResolvedTargets",
                               f"no target's provider is ready: {', '.join(unresolved)}", extra)
    route = c.Route(
        name=name, model=model, aliases=sorted(set(spec.aliases)), group=group, rules=rules,
        retry=c.Retry(attempts=spec.retry.attempts,
                      backoff=c.Backoff(initial=api.parse_duration(spec.retry.backoff.initial),
                                        max=api.parse_duration(spec.retry.backoff.max)),
                      **({"on_status": spec.retry.on_status} if spec.retry.on_status else {})),
        **({"fallback_on": spec.fallback_on} if spec.fallback_on is not None else {}),
        timeout=api.parse_duration(spec.timeout) if spec.timeout else None,
        circuit_breaker=(c.CircuitBreaker(failures=spec.circuit_breaker.failures,
                                          window=api.parse_duration(spec.circuit_breaker.window),
                                          cooldown=api.parse_duration(spec.circuit_breaker.cooldown))
                         if spec.circuit_breaker else None),
        cache=c.Cache(mode=spec.cache.mode, ttl=api.parse_duration(spec.cache.ttl),
                      partition_by=spec.cache.partition_by),
        guardrails=(c.Guardrails.from_data(spec.guardrails.model_dump(by_alias=True))
                    if spec.guardrails else None),
    )
    if unresolved:
        return route, Condition(False, "ProviderNotReady",
                                f"serving without targets whose provider is missing or not "
                                f"ready: {', '.join(unresolved)}", extra)
    return route, Condition(True, "Resolved", f"serving model {model!r}", extra)


def key_sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _virtual_key(
    name: str, spec: api.VirtualKeySpec, secrets: Mapping[str, Mapping[str, str]],
    now: datetime,
) -> tuple[c.VirtualKey, Condition] | Condition:
    secret_name = spec.secret_name or api.default_secret_name(name)
    key = secrets.get(secret_name, {}).get(API_KEY_DATA_KEY, "").strip()
    if not key:
        return Condition(False, "KeySecretNotFound",
                         f"Secret {secret_name!r} with data key {API_KEY_DATA_KEY!r} not found")
    hashes = [c.KeyHash(sha256=key_sha256(key))]
    data = secrets[secret_name]
    previous, not_after = data.get(PREVIOUS_HASH_DATA_KEY), data.get(PREVIOUS_NOT_AFTER_DATA_KEY)
    if previous and not_after and _parse_time(not_after) > now:
        hashes.append(c.KeyHash(sha256=previous.strip(), not_after=not_after.strip()))
    vk = c.VirtualKey(
        name=name, hashes=hashes, key_prefix=key[:7], models=sorted(set(spec.models)),
        budget=c.Budget(limit=spec.budget.amount, period=spec.budget.period)
        if spec.budget else None,
        limits=c.Limits.from_data(spec.limits.model_dump(by_alias=True)),
        expires_at=spec.expires_at, disabled=spec.disabled, metadata=dict(spec.metadata),
    )
    if spec.disabled:
        # What the spec asks for, reached: Ready (so GitOps health checks that wait for
        # Ready do not hang on a key switched off on purpose); the reason says it is off.
        return vk, Condition(True, "Disabled", "the key is disabled by spec.disabled: requests "
                             "with it get 401 key_disabled")
    if spec.expires_at and _parse_time(spec.expires_at) <= now:
        return vk, Condition(False, "Expired", f"the key expired at {spec.expires_at}",
                             {"expired": True})
    return vk, Condition(True, "KeyIssued", f"key {key[:7]}… is active")


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
