"""The provider-kind table (`llmgate_contract.providers.KINDS`) is what both planes do.

For every kind: the operator asks for exactly the credentials its row names; the sidecar
builds the adapter of its `wire`, which declares exactly the row's embeddings and pass-through
capabilities; the row's default base URL is where requests go when spec.baseURL is unset;
only in-process kinds skip the HTTP transport."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from llmgate_contract.config import PROVIDER_KINDS, Provider, Target
from llmgate_contract.providers import KINDS, PASSTHROUGH_OPERATIONS, REQUIRES_BASE_URL
from llmgate_operator import api
from llmgate_operator.compile import compile_namespace
from llmgate_sidecar.api.endpoints import ENDPOINTS
from llmgate_sidecar.upstream.mock import MockTransport
from llmgate_sidecar.upstream.providers import ADAPTERS, adapter_class, adapter_for
from llmgate_sidecar.upstream.providers.base import Credentials
from llmgate_sidecar.upstream.transport import HttpTransport, Transports

NEEDS_FIELD = {"api-key": "spec.apiKey.secretKeyRef", "aws": "spec.aws", "gcp": "spec.gcp"}


def provider(kind: str, **fields: Any) -> Provider:
    return Provider.from_data({"name": "p", "kind": kind, "gcpProject": "proj",
                                    "gcpLocation": "us-central1", "awsRegion": "us-east-1",
                                    **fields})


def test_every_kind_has_one_row_and_an_adapter() -> None:
    assert list(KINDS) == list(PROVIDER_KINDS)
    assert {row.wire for row in KINDS.values()} == set(ADAPTERS)


def test_the_operator_requires_base_urls_the_table_names() -> None:
    # operator/llmgate_operator/api.py keeps its own tuple for the CRD's CEL rule message.
    assert set(api.REQUIRES_BASE_URL) == set(REQUIRES_BASE_URL)


@pytest.mark.parametrize("kind", PROVIDER_KINDS)
def test_the_operator_asks_for_the_kinds_credentials(kind: str) -> None:
    spec: dict[str, Any] = {"provider": kind, "baseURL": "http://127.0.0.1:9"}
    result = compile_namespace("default", [{
        "apiVersion": "llmgate.io/v1alpha1", "kind": "ProviderSecret",
        "metadata": {"name": "p"}, "spec": spec}], {}, now=datetime.now(UTC))
    condition = result.conditions.get(("ProviderSecret", "p"))
    needs = NEEDS_FIELD.get(KINDS[kind].credentials)
    if needs is None:
        assert condition is None or condition.reason != "MissingCredentials"
        assert "p" in result.config.providers
    else:
        assert condition is not None and condition.reason == "MissingCredentials"
        assert condition.message == f"provider {kind} needs {needs}"


@pytest.mark.parametrize("kind", PROVIDER_KINDS)
def test_the_adapter_declares_the_rows_capabilities(kind: str) -> None:
    row = KINDS[kind]
    adapter = adapter_for(provider(kind, baseURL="http://127.0.0.1:9"),
                          Credentials(api_key="sk-test-0123456789"))
    assert isinstance(adapter, adapter_class(row.wire))  # type: ignore[arg-type]
    assert (adapter.embeddings is not None) == row.embeddings
    side = adapter.passthrough
    assert (side.operations if side is not None else frozenset()) == row.passthrough


@pytest.mark.parametrize("kind", [k for k in PROVIDER_KINDS if KINDS[k].default_base_url])
def test_without_a_base_url_requests_go_to_the_kinds_default(kind: str) -> None:
    row = KINDS[kind]
    assert not row.base_url_required
    adapter = adapter_for(provider(kind), Credentials(api_key="sk-test-0123456789"))
    request = adapter.chat_request({"model": "m", "messages": [
        {"role": "user", "content": "hi"}]}, Target(provider="p", model="m"), stream=False)
    assert request.url.startswith(str(row.default_base_url))


async def test_only_in_process_kinds_skip_the_http_transport() -> None:
    transports = Transports()
    try:
        for kind in PROVIDER_KINDS:
            transport = transports.for_provider(provider(kind, name=kind))
            expected = MockTransport if KINDS[kind].in_process else HttpTransport
            assert isinstance(transport, expected), kind
    finally:
        await transports.close()


def test_every_pass_through_operation_is_an_endpoint() -> None:
    served = set().union(*(row.passthrough for row in KINDS.values()))
    assert served == set(PASSTHROUGH_OPERATIONS)
    assert {f"/v1/{op}" for op in PASSTHROUGH_OPERATIONS} <= {e.path for e in ENDPOINTS}
