"""Version skew between the operator and the sidecars (docs/upgrade.md, "Skew policy").

Checked in: `tests/data/skew/config-schema-v1.json`, the JSON Schema of the compiled config
as the first release reads it (strict: no unknown fields, `schemaVersion` 1), and
`tests/data/skew/v1/*.json`, the golden configs the first release's operator wrote. They are
the other side of the skew: frozen, never regenerated.

- Operator N, sidecar N-1: every config the operator writes is in the oldest schema that
  expresses it; one without a version-2 feature is exactly what a first-release sidecar accepts, and
  one with it is written as version 2, which it refuses (keeping its last good config).
- Operator N-1, sidecar N: every first-release config is read and served.
- Operator N+1, sidecar N: optional fields a later release adds are left out and counted; a
  later schema version is refused loudly while the last good config keeps serving.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
from llmgate_contract import (
    MIN_SCHEMA_VERSION,
    SCHEMA_VERSION,
    RefusedConfig,
    TornBundleError,
    read_bundle,
    read_config,
)
from llmgate_contract.config import CompiledConfig, content_hash
from llmgate_contract.versions import canonical, document, needed_version, struct_fields

from tests.contract.test_golden import CASES, GOLDEN, compile_case

SKEW = Path(__file__).parents[1] / "data" / "skew"
V1_SCHEMA = json.loads((SKEW / "config-schema-v1.json").read_text())
V1_CASES = sorted(p.stem for p in (SKEW / "v1").glob("*.json"))
V1 = jsonschema.Draft202012Validator(V1_SCHEMA)


def v1_document(case: str) -> str:
    return (SKEW / "v1" / f"{case}.json").read_text()


def files(text: str, credentials: dict[str, str] | None = None,
          ) -> tuple[dict[str, str], dict[str, str]]:
    generation = content_hash(canonical(json.loads(text)))
    return ({"config.json": text, "generation": generation},
            {"generation": generation, **(credentials or {})})


def test_the_schema_versions() -> None:
    assert (MIN_SCHEMA_VERSION, SCHEMA_VERSION) == (1, 2)
    assert V1_SCHEMA["properties"]["schemaVersion"]["const"] == 1
    assert len(V1_CASES) >= 6


# -- operator N, sidecar N-1 (the first release) ---------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_the_operator_writes_the_oldest_schema_that_expresses_the_config(case: str) -> None:
    config = compile_case(case).config
    written = json.loads(config.canonical_json())
    assert written["schemaVersion"] == needed_version(config)
    if written["schemaVersion"] == 1:
        V1.validate(written)          # exactly what a first-release sidecar accepts
    else:
        with pytest.raises(jsonschema.ValidationError):
            V1.validate(written)      # such a sidecar refuses it and keeps its last good one


@pytest.mark.parametrize("case", V1_CASES)
def test_configs_without_newer_features_are_byte_identical_to_the_first_release(case: str) -> None:
    """The same CRs compile to the very document the first release's operator wrote: its sidecar
    in a pod started from an old image gets a config it serves, not none at all."""
    config = compile_case(case).config
    assert json.loads(config.canonical_json()) == json.loads(v1_document(case))
    assert config.generation == content_hash(canonical(json.loads(v1_document(case))))


def test_a_version_2_feature_makes_a_version_2_document() -> None:
    written = json.loads(compile_case("schema-v2").config.canonical_json())
    assert written["schemaVersion"] == 2
    prices = written["providers"]["claude"]["pricing"]["claude-sonnet-4"]
    assert prices["cacheWritePerMillion"] == "3.75"
    errors = [e.message for e in V1.iter_errors(written)]
    assert any("cacheWritePerMillion" in m for m in errors), errors
    assert any("1 was expected" in m for m in errors), errors


def _models(model: type[msgspec.Struct], seen: dict[str, type[msgspec.Struct]]) -> None:
    from typing import get_args
    if model.__name__ in seen:
        return
    seen[model.__name__] = model
    for spec in struct_fields(model):
        stack = [spec.type]
        while stack:
            ann = stack.pop()
            if isinstance(ann, type) and issubclass(ann, msgspec.Struct):
                _models(ann, seen)
            stack.extend(get_args(ann))


def test_every_field_added_after_version_1_says_when() -> None:
    """A field the first release does not know must carry `since(N)` (N >= 2), or the
    operator would put it in version-1 documents that every first-release sidecar refuses."""
    seen: dict[str, type[msgspec.Struct]] = {}
    _models(CompiledConfig, seen)
    v1_defs = V1_SCHEMA["$defs"] | {"CompiledConfig": V1_SCHEMA}
    missing = []
    for name, model in seen.items():
        known = set(v1_defs.get(name, {}).get("properties", {}))
        for spec in struct_fields(model):
            if spec.key not in known and spec.since < 2:
                missing.append(f"{name}.{spec.key}")
    assert missing == [], f"fields new since the first release without since(2): {missing}"


# -- operator N-1 (the first release), sidecar N ---------------------------------------

@pytest.mark.parametrize("case", V1_CASES)
def test_first_release_configs_are_read(case: str) -> None:
    text = v1_document(case)
    loaded = read_config(text)
    assert loaded.schema_version == 1 and loaded.ignored == ()
    credentials = json.loads((GOLDEN / case / "credentials.json").read_text()) \
        if (GOLDEN / case / "credentials.json").is_file() else {}
    bundle = read_bundle(*files(text, credentials))
    assert bundle.generation == content_hash(canonical(json.loads(text)))
    assert document(bundle.config) == json.loads(text)   # nothing lost in the round trip


# -- operator N+1, sidecar N ----------------------------------------------------------------

def _future_additions(doc: dict[str, Any]) -> dict[str, Any]:
    """What a later release may add without a new version: optional fields, anywhere."""
    doc = json.loads(json.dumps(doc))
    doc["operatorVersion"] = "9.9.9"
    provider = next(iter(doc["providers"].values()))
    provider["connectTimeout"] = 3
    doc["routes"][0]["group"]["targets"][0]["hint"] = {"region": "eu"}
    return doc


def test_optional_fields_of_a_later_release_are_left_out_and_listed() -> None:
    doc = _future_additions(json.loads(v1_document("quickstart")) | {"schemaVersion": 2})
    text = json.dumps(doc)
    loaded = read_config(text)
    assert loaded.schema_version == 2
    assert set(loaded.ignored) == {
        "operatorVersion", "providers.local-openai.connectTimeout",
        "routes[0].group.targets[0].hint"}
    # The generation is the document's as written (the unknown fields included), so both
    # volumes still agree on it.
    bundle = read_bundle(*files(text))
    assert bundle.generation == content_hash(canonical(doc))
    assert bundle.ignored == loaded.ignored


@pytest.mark.parametrize("version", [SCHEMA_VERSION + 1, 0, "2", None])
def test_a_schema_version_this_sidecar_does_not_read_is_refused(version: Any) -> None:
    doc = json.loads(v1_document("quickstart")) | {"schemaVersion": version}
    with pytest.raises(RefusedConfig) as refused:
        read_bundle(*files(json.dumps(doc)))
    assert isinstance(refused.value, TornBundleError)   # handled as "keep the last good one"
    assert refused.value.schema_version == version
    assert f"({MIN_SCHEMA_VERSION}..{SCHEMA_VERSION})" in str(refused.value)
