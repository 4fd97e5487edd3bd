"""Check a custom resource as the API server would, and as the operator would after it.

Three layers, each returning `Finding`s (a path into the object and a message): the CRD's
OpenAPI schema (as JSON Schema Draft 4, unknown fields rejected the way kubectl's default
strict field validation makes the server do), the CRD's CEL `x-kubernetes-validations`
(cel-python), and the spec models of `api` (the operator's own parse). Used by
`llmgate validate`/`dev` and by the contract tests. Pure; jsonschema and cel-python are the
`validate` extra, not operator runtime dependencies.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import celpy
import jsonschema
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError
from pydantic import ValidationError

from llmgate_operator import api, crdgen

FieldPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Finding:
    """One problem of one object: where (`path` into the object) and what."""

    path: FieldPath
    message: str
    source: str
    """`schema` (OpenAPI), `cel` (x-kubernetes-validations) or `spec` (the operator's parse)."""


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


def schema_findings(schema: Mapping[str, Any], obj: Mapping[str, Any]) -> list[Finding]:
    """OpenAPI-schema problems of `obj` against a CRD version's `openAPIV3Schema`."""
    validator = jsonschema.Draft4Validator(to_jsonschema(schema))
    findings = []
    for error in sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.path]):
        path: FieldPath = tuple(error.path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = set((error.schema or {}).get("properties", {}))
            for extra in sorted(set(error.instance) - known):
                findings.append(Finding((*path, extra), f"unknown field {extra!r}", "schema"))
            continue
        findings.append(Finding(path, error.message, "schema"))
    return findings


def walk_rules(schema: Mapping[str, Any], value: Any, path: FieldPath = ()) -> Iterator[
        tuple[FieldPath, Mapping[str, Any], Any]]:
    """(path, rule, self) for every CEL rule that applies to `value` under `schema`."""
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, rule, value
    if isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name in value:
                yield from walk_rules(child, value[name], (*path, name))
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name, child_value in value.items():
                yield from walk_rules(extra, child_value, (*path, name))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            yield from walk_rules(schema["items"], item, (*path, i))


def all_rules(schema: Mapping[str, Any], path: str = "") -> Iterator[
        tuple[str, Mapping[str, Any]]]:
    """(schema path, rule) of every CEL rule in a schema, whether or not an object uses it."""
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, rule
    for name, child in schema.get("properties", {}).items():
        yield from all_rules(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from all_rules(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from all_rules(schema["additionalProperties"], f"{path}{{}}")


@cache
def cel_program(rule: str) -> Any:
    """A compiled CEL rule (raises celpy.CELParseError on a syntax error)."""
    env = celpy.Environment()
    return env.program(env.compile(rule))


def cel_findings(schema: Mapping[str, Any], obj: Mapping[str, Any]) -> list[Finding]:
    """The CEL rules `obj` breaks. Like the API server, rules run only where the schema
    holds (call this on objects without schema findings, or expect evaluation errors)."""
    findings = []
    for path, rule, value in walk_rules(schema, obj):
        try:
            result = cel_program(rule["rule"]).evaluate({"self": json_to_cel(value)})
        except CELEvalError as exc:
            result = exc
        # Anything but a CEL true (false, or an evaluation error) rejects the object.
        if not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
            where = path
            if rule.get("fieldPath"):
                where = (*path, *str(rule["fieldPath"]).lstrip(".").split("."))
            findings.append(Finding(where, str(rule.get("message") or rule["rule"]), "cel"))
    return findings


def spec_findings(kind: str, spec: Any) -> list[Finding]:
    """What the operator's parse of `spec` (api.parse_spec) rejects, by path under spec."""
    try:
        api.parse_spec(kind, spec)
    except ValidationError as exc:
        return [Finding(("spec", *_loc(err["loc"])), err["msg"].removeprefix("Value error, "),
                        "spec")
                for err in exc.errors()]
    return []


def _related(a: FieldPath, b: FieldPath) -> bool:
    """One path is the other or lies inside it."""
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _loc(loc: tuple[int | str, ...]) -> FieldPath:
    # pydantic adds the tag of a union branch or a validator name to some locations.
    return tuple(p for p in loc if isinstance(p, int) or not str(p).startswith(("function-",
                                                                                 "tagged-")))


def check(schema: Mapping[str, Any], obj: Mapping[str, Any]) -> list[Finding]:
    """Every finding of one CR: schema, then CEL (only if the schema holds, as the API
    server does), then the operator's parse where it adds something at a new path."""
    findings = schema_findings(schema, obj)
    if not findings:
        findings = cel_findings(schema, obj)
    kind = str(obj.get("kind"))
    if kind in api.SPEC_MODELS:
        # The parse mostly repeats the schema; keep what it says about other fields.
        findings += [f for f in spec_findings(kind, obj.get("spec"))
                     if not any(_related(f.path, seen.path) for seen in findings)]
    return findings


@cache
def openapi_schemas() -> dict[str, dict[str, Any]]:
    """kind -> the `openAPIV3Schema` of its CRD, generated from the `api` models (the one
    source of the shipped CRDs, so this checks exactly what the API server will)."""
    return {r.kind: crdgen.openapi_schema(r) for r in api.RESOURCES}
