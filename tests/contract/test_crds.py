"""The CRDs in crds/ (generated from llmgate_operator.api) and the models agree on every CR.

Every example CR passes both; every known-bad CR (tests/data/crs/bad/) fails both; the CRDs
are valid, structural Kubernetes objects whose printer columns point at real fields; the
status schema keeps what the operator writes (the API server prunes anything it lacks).
test_crdgen.py checks that the committed files are what the generator writes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from llmgate_operator import api
from llmgate_operator.compile import compile_namespace
from pydantic import ValidationError

from tests.contract import crd_schema as cs

EXAMPLES = sorted((cs.ROOT / "examples").glob("*.yaml"))
BAD_DIR = cs.ROOT / "tests" / "data" / "crs" / "bad"
BAD = sorted(BAD_DIR.glob("*.yaml"))
KINDS = sorted(api.SPEC_MODELS)
SHORT_NAMES = {"ProviderSecret": "lgps", "LLMRoute": "lgr", "VirtualKey": "lgvk"}


def _example_crs() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc)
            for path in EXAMPLES for doc in cs.load_docs(path) if cs.is_custom_resource(doc)]


EXAMPLE_CRS = _example_crs()


def _celpy() -> None:
    pytest.importorskip("celpy", reason="pip install cel-python to evaluate the CEL rules")


# --- the CRDs as Kubernetes objects ---------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_crd_is_a_valid_kubernetes_object(kind: str) -> None:
    assert kubernetes_validate.validate(cs.crds()[kind], "1.30.0", strict=True) == "1.30"


@pytest.mark.parametrize("kind", KINDS)
def test_crd_names_are_the_public_interface(kind: str) -> None:
    spec = cs.crds()[kind]["spec"]
    plural = api.PLURALS[kind]
    assert cs.crds()[kind]["metadata"]["name"] == f"{plural}.{api.GROUP}"
    assert spec["group"] == api.GROUP and spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == kind and spec["names"]["plural"] == plural
    assert spec["names"]["shortNames"] == [SHORT_NAMES[kind]]
    assert spec["names"]["categories"] == ["llmgate"]
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == (api.VERSION, True, True)
    assert version["subresources"] == {"status": {}}


def test_crd_files_hold_one_crd_each() -> None:
    assert sorted(p.name for p in cs.CRD_DIR.glob("*.yaml")) == [
        f"{api.PLURALS[k]}.yaml" for k in sorted(api.PLURALS, key=api.PLURALS.__getitem__)]
    for path in cs.CRD_DIR.glob("*.yaml"):
        assert len(cs.load_docs(path)) == 1, path


def _structural_problems(node: dict[str, Any], path: str) -> list[str]:
    """What the API server would refuse in a structural schema (it is not here to ask)."""
    problems = []
    untyped_ok = node.get("x-kubernetes-preserve-unknown-fields") or node.get(
        "x-kubernetes-int-or-string")
    if "type" not in node and not untyped_ok:
        problems.append(f"{path}: no type")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: both properties and additionalProperties")
    for key in node.get("x-kubernetes-list-map-keys", []):
        item = node["items"]
        if key not in item.get("required", []) and "default" not in item["properties"][key]:
            problems.append(f"{path}: list-map key {key} is neither required nor defaulted")
    for rule in node.get("x-kubernetes-validations", []):
        field = rule.get("fieldPath", "").lstrip(".")
        if field and field not in node.get("properties", {}):
            problems.append(f"{path}: CEL fieldPath {rule['fieldPath']} is not a field")
    for name, child in node.get("properties", {}).items():
        problems += _structural_problems(child, f"{path}.{name}")
    for key, suffix in (("items", "[]"), ("additionalProperties", "{}")):
        if isinstance(node.get(key), dict):
            problems += _structural_problems(node[key], path + suffix)
    return problems


@pytest.mark.parametrize("kind", KINDS)
def test_crd_schema_is_structural(kind: str) -> None:
    assert _structural_problems(cs.openapi_schema(kind), "") == []


@pytest.mark.parametrize("kind", KINDS)
def test_cel_rules_compile(kind: str) -> None:
    _celpy()
    rules = list(cs.all_cel_rules(cs.openapi_schema(kind)))
    assert rules or kind == "VirtualKey"
    for _path, rule in rules:
        cs.cel_program(rule["rule"])   # raises on a syntax error


def _schema_at(schema: dict[str, Any], path: str) -> dict[str, Any] | None:
    """Follow a printer-column JSONPath (.a.b[?(@.type=="X")].c) through the schema."""
    node: dict[str, Any] | None = schema
    for part in path.lstrip(".").split("."):
        if node is None:
            return None
        name, _, selector = part.partition("[")
        node = node.get("properties", {}).get(name)
        if node is not None and selector:
            node = node.get("items")
        if node is not None and name == "metadata" and path.startswith(".metadata."):
            return node            # ObjectMeta: the API server owns it
    return node


@pytest.mark.parametrize("kind", KINDS)
def test_printer_columns_point_at_schema_fields(kind: str) -> None:
    [version] = cs.crds()[kind]["spec"]["versions"]
    columns = version["additionalPrinterColumns"]
    names = [c["name"] for c in columns]
    assert names[-1] == "Age" and "Ready" in names and "Reason" in names
    schema = version["schema"]["openAPIV3Schema"]
    for column in columns:
        # The selector inside [...] contains dots: drop it before splitting the path.
        path = column["jsonPath"].replace('[?(@.type=="Ready")]', "[]")
        assert _schema_at(schema, path) is not None, column


def test_ready_column_reads_the_ready_condition() -> None:
    for kind in KINDS:
        [version] = cs.crds()[kind]["spec"]["versions"]
        ready = next(c for c in version["additionalPrinterColumns"] if c["name"] == "Ready")
        assert ready["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'


# --- the generated schema's shape ----------------------------------------------------------

def _depth(node: dict[str, Any]) -> int:
    items = node.get("properties", {}).get("targets", {}).get("items")
    return 0 if items is None else 1 + _depth(items)


def test_target_groups_unroll_three_levels_deep() -> None:
    spec = cs.openapi_schema("LLMRoute")["properties"]["spec"]
    # spec.targets[] may be a group of groups of groups of leaves.
    assert _depth(spec) == 4
    assert _depth(spec["properties"]["rules"]["items"]) == 4


# --- examples pass both ---------------------------------------------------------------------

@pytest.mark.parametrize("name,cr", EXAMPLE_CRS, ids=[n for n, _ in EXAMPLE_CRS])
def test_example_cr_is_valid(name: str, cr: dict[str, Any]) -> None:
    assert cr["apiVersion"] == api.API_VERSION
    api.parse_spec(cr["kind"], cr.get("spec"))
    assert cs.schema_errors(cr) == []


@pytest.mark.parametrize("name,cr", EXAMPLE_CRS, ids=[n for n, _ in EXAMPLE_CRS])
def test_example_cr_passes_cel_rules(name: str, cr: dict[str, Any]) -> None:
    _celpy()
    assert cs.cel_errors(cr) == []


def test_examples_cover_every_kind_and_provider() -> None:
    kinds = {cr["kind"] for _, cr in EXAMPLE_CRS}
    providers = {cr["spec"]["provider"] for _, cr in EXAMPLE_CRS if cr["kind"] == "ProviderSecret"}
    from llmgate_contract.config import PROVIDER_KINDS
    assert kinds == set(KINDS)
    assert providers == set(PROVIDER_KINDS)


def _secret_data(doc: dict[str, Any]) -> dict[str, str]:
    import base64
    data = {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
    return data | dict(doc.get("stringData") or {})


def test_examples_compile_ready_together() -> None:
    """All examples in one namespace (as a user applying examples/ would): everything Ready."""
    docs = [doc for path in EXAMPLES for doc in cs.load_docs(path)]
    secrets = {d["metadata"]["name"]: _secret_data(d) for d in docs if d["kind"] == "Secret"}
    crs = [d for d in docs if cs.is_custom_resource(d)]
    for vk in (d for d in crs if d["kind"] == "VirtualKey"):
        # In a cluster the operator issues keys that no file brings.
        name = vk["spec"].get("secretName") or api.default_secret_name(vk["metadata"]["name"])
        secrets.setdefault(name, {"api-key": f"lg-issued-{vk['metadata']['name']}"})
    result = compile_namespace("examples", crs, secrets, now=datetime(2026, 1, 1, tzinfo=UTC))
    not_ready = {key: (c.reason, c.message) for key, c in result.conditions.items() if not c.ready}
    assert not_ready == {}      # a key disabled on purpose is Ready (reason Disabled)
    assert result.conditions[("VirtualKey", "suspended-intern")].reason == "Disabled"
    assert len(result.conditions) == len(crs)
    served = {name for r in result.config.routes for name in (r.model, *r.aliases)}
    assert {"assistant", "default-chat", "llama-70b", "mock-stream", "gpt-4o-mini"} <= served


# --- known-bad CRs fail both ----------------------------------------------------------------

def _bad(path: Path) -> tuple[dict[str, Any], str, bool]:
    text = path.read_text()
    [doc] = cs.load_docs(path)
    why = text.splitlines()[0]
    return doc, why, "# enforced-by: cel" in text


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_cr_is_rejected_by_pydantic(path: Path) -> None:
    doc, why, _ = _bad(path)
    assert why.startswith("# Bad: "), "every bad CR says why in its first line"
    with pytest.raises(ValidationError):
        api.parse_spec(doc["kind"], doc.get("spec"))


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_cr_is_rejected_by_crd(path: Path) -> None:
    doc, _, cel_only = _bad(path)
    errors = cs.schema_errors(doc)
    if not cel_only:
        assert errors, "the OpenAPI schema accepts it"
        return
    # jsonschema cannot run CEL: the schema alone accepts it (else the marker is wrong) ...
    assert errors == []
    _celpy()
    # ... and a CEL rule rejects it.
    assert cs.cel_errors(doc)


def test_provider_length_bound_admits_every_provider() -> None:
    provider = cs.openapi_schema("ProviderSecret")["properties"]["spec"]["properties"]["provider"]
    assert max(len(p) for p in provider["enum"]) <= provider["maxLength"]


def test_cel_only_rules_exist_where_pydantic_has_them() -> None:
    """Rules the OpenAPI schema cannot express are in the CRD as CEL, with their reason."""
    messages = {kind: {r["message"] for _, r in cs.all_cel_rules(cs.openapi_schema(kind))}
                for kind in KINDS}
    assert any("baseURL is required" in m for m in messages["ProviderSecret"])
    for provider in sorted(api.REQUIRES_BASE_URL):
        rule = next(r for _, r in cs.all_cel_rules(cs.openapi_schema("ProviderSecret"))
                    if "baseURL" in r["message"])
        assert f"'{provider}'" in rule["rule"]
    assert "accessKeyId and secretAccessKey go together" in messages["ProviderSecret"]
    assert any("provider and model, or targets" in m for m in messages["LLMRoute"])
    cel_marked = [p for p in BAD if _bad(p)[2]]
    assert len(cel_marked) >= 4


# --- status: what the operator writes survives pruning --------------------------------------

def _status_validator_errors(kind: str, status: dict[str, Any]) -> list[str]:
    import jsonschema
    schema = cs.to_jsonschema(cs.openapi_schema(kind)["properties"]["status"])
    return [e.message for e in jsonschema.Draft4Validator(schema).iter_errors(status)]


@pytest.mark.parametrize("kind", KINDS)
def test_status_conditions_are_kstatus_shaped(kind: str) -> None:
    conditions = cs.openapi_schema(kind)["properties"]["status"]["properties"]["conditions"]
    fields = set(conditions["items"]["properties"])
    assert {"type", "status", "reason", "message", "observedGeneration",
            "lastTransitionTime"} <= fields
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    good = {"observedGeneration": 3, "conditions": [{
        "type": "Ready", "status": "False", "reason": "SecretNotFound",
        "message": "Secret 'keys' does not exist", "observedGeneration": 3,
        "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    assert _status_validator_errors(kind, good) == []
    bad = {"conditions": [{"type": "Ready", "status": "yes"}]}
    assert _status_validator_errors(kind, bad)


def test_status_keeps_what_the_operator_writes() -> None:
    """Fields missing from the status schema would be silently pruned by the API server."""
    from llmgate_operator import render

    docs = [doc for path in EXAMPLES for doc in cs.load_docs(path)]
    secrets = {d["metadata"]["name"]: _secret_data(d) for d in docs if d["kind"] == "Secret"}
    crs = [{**d, "metadata": {**d["metadata"], "generation": 2}}
           for d in docs if cs.is_custom_resource(d)]
    now = datetime(2026, 1, 1, tzinfo=UTC)
    result = compile_namespace("examples", crs, secrets, now=now)
    written = set()
    for cr in crs:
        status = render.desired_status(result, cr, {}, now=now)
        assert _status_validator_errors(cr["kind"], status) == [], (cr["kind"], status)
        written |= {(cr["kind"], key) for key in status}
    assert {("LLMRoute", "targets"), ("VirtualKey", "keyPrefix"),
            ("VirtualKey", "secretName")} <= written


def test_status_spend_is_decimal_strings() -> None:
    spend = {"amount": "1.25", "limit": "5.00", "periodStart": "2026-01-01T00:00:00Z"}
    assert _status_validator_errors("VirtualKey", {"spend": spend}) == []
    assert _status_validator_errors("VirtualKey", {"spend": {"amount": 1.25}})
