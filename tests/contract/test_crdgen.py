"""The CRDs are generated from the models in llmgate_operator.api, and the committed ones are
what the generator writes (`make crds`).

The generator's output must be a structural schema the API server accepts: these tests feed it
models it must refuse (unions, undeclared self-references) and check what it makes of the real
ones (descriptions everywhere for `kubectl explain`, CEL rules where the model declares them,
the target tree unrolled to its leaf form).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from llmgate_contract.config import PROVIDER_KINDS
from llmgate_operator import api, crdgen
from pydantic import Field

from tests.contract import crd_schema as cs


def test_committed_crds_are_generated() -> None:
    assert crdgen.stale(cs.CRD_DIR) == [], "run `make crds`"
    assert crdgen.stale(cs.CHART_CRD_DIR) == [], "run `make crds`"
    assert sorted(crdgen.crds()) == sorted(p.name for p in cs.CRD_DIR.glob("*.yaml"))


def test_check_mode_fails_on_an_edited_or_missing_file(tmp_path: Path) -> None:
    assert crdgen.main([str(tmp_path)]) == 0
    assert crdgen.main(["--check", str(tmp_path)]) == 0
    edited = tmp_path / "llmroutes.yaml"
    edited.write_text(edited.read_text().replace("maxItems: 32", "maxItems: 33", 1))
    (tmp_path / "virtualkeys.yaml").unlink()
    assert crdgen.stale(tmp_path) == ["llmroutes.yaml", "virtualkeys.yaml"]
    assert crdgen.main(["--check", str(tmp_path)]) == 1


def _nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from _nodes(child, f"{path}.{name}")
    for key, suffix in (("items", "[]"), ("additionalProperties", "{}")):
        if isinstance(schema.get(key), dict):
            yield from _nodes(schema[key], path + suffix)


def _needs_description(path: str, node: dict[str, Any]) -> bool:
    if path == ".metadata":       # ObjectMeta: the API server documents it
        return False
    if path.endswith(("[]", "{}")):
        return node.get("type") == "object"
    return True


@pytest.mark.parametrize("resource", api.RESOURCES, ids=lambda r: r.kind)
def test_every_field_and_object_is_described(resource: api.Resource) -> None:
    """`kubectl explain` shows these; scalar list items are described by their list."""
    undescribed = [path for path, node in _nodes(cs.openapi_schema(resource.kind))
                   if _needs_description(path, node) and not node.get("description")]
    assert undescribed == []


@pytest.mark.parametrize("resource", api.RESOURCES, ids=lambda r: r.kind)
def test_string_enums_bound_their_length(resource: api.Resource) -> None:
    for path, node in _nodes(cs.openapi_schema(resource.kind)):
        if "enum" in node and node["type"] == "string":
            assert node["maxLength"] == max(len(v) for v in node["enum"]), path


def test_provider_enum_is_the_contract_provider_kinds() -> None:
    spec = cs.openapi_schema("ProviderSecret")["properties"]["spec"]
    assert spec["properties"]["provider"]["enum"] == list(PROVIDER_KINDS)


def test_cel_rules_appear_wherever_their_model_does() -> None:
    rules = [rule["rule"] for _, rule in cs.all_cel_rules(cs.openapi_schema("LLMRoute"))]
    [target_rule] = api.TargetSpec.cel_rules
    # Three group levels under spec.targets and under spec.rules[].targets; leaves have none.
    assert rules.count(target_rule.rule) == 2 * api.MAX_GROUP_DEPTH
    ps = cs.openapi_schema("ProviderSecret")["properties"]["spec"]
    declared = [r.as_schema() for r in api.ProviderSecretSpec.cel_rules]
    assert ps["x-kubernetes-validations"] == declared


def test_the_deepest_target_is_a_leaf() -> None:
    node = cs.openapi_schema("LLMRoute")["properties"]["spec"]["properties"]["targets"]["items"]
    for _ in range(api.MAX_GROUP_DEPTH):
        assert {"strategy", "targets"} <= set(node["properties"])
        node = node["properties"]["targets"]["items"]
    assert not {"strategy", "targets"} & set(node["properties"])
    assert node["required"] == ["provider", "model"]
    assert "x-kubernetes-validations" not in node


class _Added(api._Spec):
    """A model as a contributor would extend it."""

    replicas: int | None = Field(default=None, ge=1, le=5, description="How many.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels.")
    extra: dict[str, Any] = Field(default_factory=dict, description="Free-form.")


def test_a_new_model_field_reaches_the_schema_with_its_bounds() -> None:
    schema = crdgen.model_schema(_Added)
    assert schema == {
        "type": "object", "description": "A model as a contributor would extend it.",
        "properties": {
            "replicas": {"type": "integer", "description": "How many.", "minimum": 1,
                         "maximum": 5},
            "labels": {"type": "object", "description": "Labels.",
                       "additionalProperties": {"type": "string"}},
            "extra": {"type": "object", "description": "Free-form.",
                      "x-kubernetes-preserve-unknown-fields": True},
        },
    }


class _Union(api._Spec):
    """Structural schemas have no union of types."""

    value: int | str = 1


class _Loop(api._Spec):
    """A self-reference without api.Nesting cannot be unrolled."""

    children: list[_Loop] = Field(default_factory=list)
    nesting: ClassVar[api.Nesting | None] = None


@pytest.mark.parametrize("model,message", [(_Union, ".value: a union"),
                                           (_Loop, "refers to itself")])
def test_models_without_a_structural_form_are_refused(model: type[api._Spec],
                                                      message: str) -> None:
    with pytest.raises(crdgen.SchemaError, match=message):
        crdgen.model_schema(model)
