"""The serving tables built from one loaded config: what a request looks up, and nothing else.

`Runtime.build(bundle, transports)` is called by the config source on every good reload;
requests take the current `Runtime` once at their start and keep it to the end, so a reload
never changes the config under a request in flight. Built once, read-only afterwards.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from llmgate_contract import Bundle
from llmgate_contract.config import Group, Provider, Route, Target, VirtualKey
from llmgate_contract.providers import KINDS

from llmgate_sidecar.config.pricing import ModelPrice, output_ceiling, price_for
from llmgate_sidecar.upstream.providers import (
    Adapter,
    Credentials,
    UnsupportedProvider,
    adapter_for,
)
from llmgate_sidecar.upstream.transport import Transport, Transports

log = logging.getLogger("llmgate.sidecar")


@dataclass(frozen=True, slots=True)
class Upstream:
    """A provider account ready to call: its translator and its connection pool."""

    provider: Provider
    adapter: Adapter
    transport: Transport
    secrets: tuple[str, ...] = ()

    def redact(self, text: str) -> str:
        """`text` with the namespace's credentials blanked: upstream error messages sometimes
        echo the key they rejected, and those messages reach clients and logs."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "[REDACTED]")
        return text


def leaves(group: Group) -> Iterator[Target]:
    """The targets of a (nested) target group, in order."""
    for child in group.targets:
        if isinstance(child, Target):
            yield child
        else:
            yield from leaves(child)


# Per target of a group: its price and the output-token ceiling its params set.
PricePlan = tuple[tuple[ModelPrice, "int | None"], ...]


def _ceiling(target: Target) -> int | None:
    return output_ceiling(target.params)


@dataclass(frozen=True, slots=True)
class KeyEntry:
    key: VirtualKey
    sha256: str
    not_after: datetime | None
    expires_at: datetime | None


@dataclass(frozen=True)
class Runtime:
    generation: str
    namespace: str
    routes_by_model: Mapping[str, Route]
    routes: tuple[Route, ...]
    upstreams: Mapping[str, Upstream]
    unsupported: Mapping[str, str]
    keys_by_hash: Mapping[str, KeyEntry]
    keys_by_name: Mapping[str, VirtualKey]
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # Resolved once per config instead of per request (`price_for` lower-cases a provider's
    # whole pricing table per call): each target's price, and the price plan of every
    # target group this runtime holds (its routes' and rules' groups, by identity: they live
    # as long as the runtime). Filled on first use; per runtime, so a reload starts afresh.
    _prices: dict[tuple[str, str], ModelPrice] = field(default_factory=dict, repr=False,
                                                       compare=False)
    _plans: dict[int, tuple[Group, PricePlan]] = field(default_factory=dict, repr=False,
                                                       compare=False)

    def price(self, target: Target) -> ModelPrice:
        """The target's price under its provider's pricing (or the built-in table)."""
        key = (target.provider, target.model)
        price = self._prices.get(key)
        if price is None:
            upstream = self.upstreams.get(target.provider)
            price = self._prices[key] = price_for(
                target.model, upstream.provider.pricing if upstream else None)
        return price

    def price_plan(self, group: Group) -> PricePlan:
        """Each target of `group` with its price and output ceiling."""
        entry = self._plans.get(id(group))
        if entry is not None and entry[0] is group:
            return entry[1]
        plan = tuple((self.price(target), _ceiling(target)) for target in leaves(group))
        if any(group is g for r in self.routes for g in (r.group, *(x.group for x in r.rules))):
            self._plans[id(group)] = (group, plan)  # held by this runtime: its id is stable
        return plan

    @classmethod
    def build(cls, bundle: Bundle, transports: Transports) -> Runtime:
        config = bundle.config
        upstreams: dict[str, Upstream] = {}
        unsupported: dict[str, str] = {}
        # Every account's secrets are scrubbed from every upstream's messages: an error may
        # quote a key that is not the answering account's own (e.g. a proxying upstream).
        secrets = Credentials(extra=dict(bundle.credentials)).secret_values()
        for name, configured in config.providers.items():
            provider = _with_secret_headers(configured, bundle.credentials)
            credentials = _credentials(provider, bundle.credentials)
            try:
                adapter = adapter_for(provider, credentials)
            except UnsupportedProvider as exc:
                unsupported[name] = str(exc)
                log.warning("provider %s: %s", name, exc)
                continue
            upstreams[name] = Upstream(provider, adapter, transports.for_provider(provider),
                                       secrets)
        routes_by_model: dict[str, Route] = {}
        for route in config.routes:
            for public in (route.model, *route.aliases):
                routes_by_model.setdefault(public, route)
        keys_by_hash: dict[str, KeyEntry] = {}
        for key in config.virtual_keys:
            expires = _time(key.expires_at)
            for h in key.hashes:
                keys_by_hash[h.sha256] = KeyEntry(key, h.sha256, _time(h.not_after), expires)
        return cls(generation=bundle.generation, namespace=config.namespace,
                   routes_by_model=routes_by_model, routes=tuple(config.routes),
                   upstreams=upstreams, unsupported=unsupported, keys_by_hash=keys_by_hash,
                   keys_by_name={k.name: k for k in config.virtual_keys})

    def find_key(self, digest: str) -> KeyEntry | None:
        entry = self.keys_by_hash.get(digest)
        # The dict lookup finds the candidate; the constant-time compare is the check.
        if entry is not None and hmac.compare_digest(entry.sha256, digest):
            return entry
        return None


def _with_secret_headers(provider: Provider, files: Mapping[str, str]) -> Provider:
    """The provider with its `headerFiles` values (from the volume) among its headers."""
    if not provider.header_files:
        return provider
    secret = {h: files[f].strip() for h, f in provider.header_files.items() if f in files}
    return provider.replace(headers={**provider.headers, **secret})


def _credentials(provider: Provider, files: Mapping[str, str]) -> Credentials:
    """The secrets of the kind's credentials (`KINDS[kind].credentials`), from the volume."""
    needs = KINDS[provider.kind].credentials
    extra: dict[str, str] = {}
    if needs == "aws":
        extra = {k: files[f] for k, f in provider.aws_files.items() if f in files}
    if needs == "gcp" and provider.gcp_key_file and provider.gcp_key_file in files:
        extra["gcp-service-account-key"] = files[provider.gcp_key_file]
    api_key = None
    if needs in ("api-key", "optional-api-key") and provider.api_key_file:
        api_key = files.get(provider.api_key_file)
    return Credentials(api_key=api_key.strip() if api_key else None, extra=extra)


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
