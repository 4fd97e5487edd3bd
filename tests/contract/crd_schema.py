"""Validate custom resources against the CRDs in `crds/`, as the API server would.

Used by tests/contract/test_crds.py and tests/chart/test_packaging.py. There is no API
server here, so this emulates the parts that matter: the OpenAPI schema (as jsonschema
Draft 4, the conversion of TESTING-TOOLS.md §4), unknown fields rejected as kubectl's
default `--validate=strict` makes the server do, and the CEL `x-kubernetes-validations`
(evaluated with cel-python when it is installed). Test helpers only; no assertions here.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "crds"
CHART_CRD_DIR = ROOT / "charts" / "llmgate" / "crds"
GROUP = "llmgate.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


def load_docs(path: Path) -> list[dict[str, Any]]:
    """Every non-empty YAML document of a file."""
    with path.open() as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc]


@cache
def crds() -> dict[str, dict[str, Any]]:
    """kind -> CRD body, from crds/*.yaml."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for doc in load_docs(path):
            found[doc["spec"]["names"]["kind"]] = doc
    return found


def openapi_schema(kind: str) -> dict[str, Any]:
    version = next(v for v in crds()[kind]["spec"]["versions"] if v["name"] == VERSION)
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def to_jsonschema(node: Any) -> Any:
    """OpenAPI v3 (Kubernetes dialect) -> JSON Schema Draft 4, rejecting unknown fields.

    The API server prunes unknown fields, but with kubectl's default field validation
    (Strict) it reports them as errors instead, so a typo'd field fails an apply.
    """
    if isinstance(node, list):
        return [to_jsonschema(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if ("properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@cache
def _validator(kind: str) -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(to_jsonschema(openapi_schema(kind)))


def schema_errors(cr: dict[str, Any]) -> list[str]:
    """OpenAPI-schema errors of a CR, as 'path: message' lines (empty = valid)."""
    errors = sorted(_validator(cr["kind"]).iter_errors(cr), key=lambda e: list(e.path))
    return [f"{'.'.join(str(p) for p in e.path) or '<root>'}: {e.message}" for e in errors]


def walk_rules(schema: dict[str, Any], value: Any, path: str = "") -> Iterator[
        tuple[str, dict[str, Any], Any]]:
    """Yield (path, rule, self) for every CEL rule that applies to `value` under `schema`."""
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, rule, value
    if isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name in value:
                yield from walk_rules(child, value[name], f"{path}.{name}")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name, child_value in value.items():
                yield from walk_rules(extra, child_value, f"{path}.{name}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            yield from walk_rules(schema["items"], item, f"{path}[{i}]")


def cel_program(rule: str) -> Any:
    """Compile a CEL rule with cel-python (raises ImportError when it is not installed)."""
    import celpy

    env = celpy.Environment()
    return env.program(env.compile(rule))


def cel_errors(cr: dict[str, Any]) -> list[str]:
    """Messages of the CEL rules a CR breaks (needs cel-python)."""
    import celpy
    from celpy.adapter import json_to_cel

    failed = []
    for path, rule, value in walk_rules(openapi_schema(cr["kind"]), cr):
        result = cel_program(rule["rule"]).evaluate({"self": json_to_cel(value)})
        # Anything but a CEL true (false, or an evaluation error) rejects the object.
        if not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
            failed.append(f"{path or '<root>'}: {rule['message']}")
    return failed


def all_cel_rules(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(schema path, rule) of every CEL rule in a schema."""
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, rule
    for name, child in schema.get("properties", {}).items():
        yield from all_cel_rules(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from all_cel_rules(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from all_cel_rules(schema["additionalProperties"], f"{path}{{}}")


def is_custom_resource(doc: dict[str, Any]) -> bool:
    return str(doc.get("apiVersion", "")).startswith(f"{GROUP}/")
