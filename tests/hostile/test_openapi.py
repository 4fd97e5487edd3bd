"""docs/openapi.yaml is what the sidecar accepts: every route the app serves is in it, and
schemathesis sends requests generated from it (valid and invalid, bounded in number) to the
real sidecar process: no 5xx, declared status codes and content types, and every error
matches the envelope schema."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from llmgate_sidecar.api.endpoints import ENDPOINTS
from schemathesis import checks
from schemathesis.specs.openapi import checks as openapi_checks

from tests.hostile.sidecar_process import SidecarProcess
from tests.sidecar.harness import KEY, provider, route, virtual_key

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
schema = schemathesis.openapi.from_path(DOC)
CHECKS = [checks.not_a_server_error, openapi_checks.status_code_conformance,
          openapi_checks.content_type_conformance, openapi_checks.response_schema_conformance]


def test_every_route_is_documented() -> None:
    paths = yaml.safe_load(DOC.read_text())["paths"]
    served = {endpoint.path for endpoint in ENDPOINTS} | {"/v1/models", "/v1/models/{model}"}
    assert set(paths) == served


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    process = SidecarProcess(tmp_path_factory.mktemp("openapi"), [
        provider("mock", "mock", mock={"reply": "ok"}),
        route("m", [{"provider": "mock", "model": "m"}]),
        virtual_key("team", secretName="team-key")],
        client_body_timeout=5, request_timeout=10)
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(process.ops_url + "/readyz", timeout=1) as response:
                if response.status == 200:
                    break
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline or process.proc.poll() is not None:
            process.kill()
            raise AssertionError(f"the sidecar did not start: {process.output()}")
        time.sleep(0.1)
    try:
        yield process
    finally:
        process.terminate()
        process.kill()


@schema.parametrize()
@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_generated_requests(case: schemathesis.Case, sidecar: SidecarProcess) -> None:
    if case.body is not None and isinstance(case.body, dict) and "model" in case.body:
        # Most generated bodies should reach a route (the rest stay as generated).
        if case.body["model"] and hash(str(case.body)) % 2 == 0:
            case.body["model"] = "m"
    case.call_and_validate(base_url=sidecar.url, headers={"Authorization": f"Bearer {KEY}"},
                           checks=CHECKS, timeout=30)
