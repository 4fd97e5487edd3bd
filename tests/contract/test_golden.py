"""Golden compiles: `tests/data/golden/<case>/crs.yaml` -> config.json, credentials.json and
conditions.json, exactly. The sidecar's tests load the same config.json files.

Regenerate after an intended change with `LLMGATE_UPDATE_GOLDEN=1 pytest tests/contract`,
then review the diff: it is the change every sidecar will see.
"""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from llmgate_contract import PROVIDER_KINDS, bundle_files, parse_config, read_bundle
from llmgate_contract.config import Group
from llmgate_operator import api
from llmgate_operator.compile import Compilation, compile_namespace

GOLDEN = Path(__file__).parents[1] / "data" / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "crs.yaml").is_file())
NAMESPACE = "golden"
# Fixed, so expiry and rotation grace periods compile the same on every run.
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
UPDATE = os.environ.get("LLMGATE_UPDATE_GOLDEN") == "1"


def load_case(case: str) -> tuple[list[dict[str, Any]], dict[str, dict[str, str]]]:
    """The CRs and the decoded Secrets of one case."""
    resources: list[dict[str, Any]] = []
    secrets: dict[str, dict[str, str]] = {}
    for doc in yaml.safe_load_all((GOLDEN / case / "crs.yaml").read_text()):
        if not doc:
            continue
        doc.setdefault("metadata", {}).setdefault("namespace", NAMESPACE)
        if doc["kind"] == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
            secrets[doc["metadata"]["name"]] = data | dict(doc.get("stringData") or {})
        elif doc["kind"] in api.SPEC_MODELS:
            doc["metadata"].setdefault("generation", 1)
            resources.append(doc)
    return resources, secrets


def compile_case(case: str) -> Compilation:
    resources, secrets = load_case(case)
    return compile_namespace(NAMESPACE, resources, secrets, now=NOW)


def conditions_of(compilation: Compilation) -> dict[str, Any]:
    return {f"{kind}/{name}": {"ready": c.ready, "reason": c.reason, "message": c.message,
                               **({"extra": dict(c.extra)} if c.extra else {})}
            for (kind, name), c in sorted(compilation.conditions.items())}


def rendered(compilation: Compilation) -> dict[str, str]:
    """The three golden files' text (pretty JSON: reviewed by people, loaded by the sidecar)."""
    config = json.loads(compilation.config.canonical_json())
    return {
        "config.json": json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
        "credentials.json": json.dumps(compilation.credentials, indent=2, sort_keys=True) + "\n",
        "conditions.json": json.dumps(conditions_of(compilation), indent=2, sort_keys=True,
                                      ensure_ascii=False) + "\n",
    }


@pytest.mark.parametrize("case", CASES)
def test_golden_compile(case: str) -> None:
    files = rendered(compile_case(case))
    for name, text in files.items():
        path = GOLDEN / case / name
        if UPDATE:
            path.write_text(text)
        assert path.is_file(), f"{path} missing: run with LLMGATE_UPDATE_GOLDEN=1"
        assert path.read_text() == text, f"{case}/{name} changed (LLMGATE_UPDATE_GOLDEN=1 " \
                                         f"regenerates; review the diff)"


@pytest.mark.parametrize("case", CASES)
def test_golden_config_is_what_the_sidecar_accepts(case: str) -> None:
    config = parse_config((GOLDEN / case / "config.json").read_text())
    credentials = json.loads((GOLDEN / case / "credentials.json").read_text())
    assert config.generation == compile_case(case).config.generation
    bundle = read_bundle(*bundle_files(config, credentials))
    assert bundle.config == config


def test_the_cases_cover_what_they_claim() -> None:
    """Guards the golden data itself, so a regeneration cannot quietly hollow it out."""
    providers = parse_config((GOLDEN / "providers" / "config.json").read_text()).providers
    assert {p.kind for p in providers.values()} == set(PROVIDER_KINDS)
    credentials = json.loads((GOLDEN / "providers" / "credentials.json").read_text())
    assert credentials["bedrock.aws-session-token"] == "aws-session"
    assert "vertex.gcp-service-account-key" in credentials

    routing = parse_config((GOLDEN / "routing" / "config.json").read_text())
    smart = next(r for r in routing.routes if r.name == "smart")
    assert [r.group.strategy for r in smart.rules] == ["least-busy", "fallback"]
    nested = smart.group.targets[1]
    assert isinstance(nested, Group) and isinstance(nested.targets[1], Group)

    rotation = parse_config((GOLDEN / "rotation-grace" / "config.json").read_text())
    by_name = {k.name: k for k in rotation.virtual_keys}
    assert len(by_name["rotating"].hashes) == 2  # still inside the grace period
    assert len(by_name["rotated-long-ago"].hashes) == 1  # grace period over

    reasons = {k: v["reason"] for k, v in json.loads(
        (GOLDEN / "invalid-specs" / "conditions.json").read_text()).items()}
    assert reasons["LLMRoute/good"] == "Resolved"
    assert reasons["LLMRoute/bad-strategy"] == "InvalidSpec"
    assert reasons["ProviderSecret/bedrock-without-aws"] == "MissingCredentials"
    missing = {k: v["reason"] for k, v in json.loads(
        (GOLDEN / "missing-references" / "conditions.json").read_text()).items()}
    assert {missing[f"ProviderSecret/{n}"] for n in ("no-secret", "no-key", "blank-key")} == {
        "SecretNotFound", "SecretKeyNotFound", "SecretKeyEmpty"}
