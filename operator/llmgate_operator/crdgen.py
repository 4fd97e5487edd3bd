"""The CustomResourceDefinitions, generated from the models in `api` (`make crds`).

pydantic's JSON schema of each spec/status model becomes a structural OpenAPI v3 schema as
the API server demands it: `$ref`s inlined (self-references unrolled per `api.Nesting`),
`Optional[X]` as an absent field rather than a null, free-form maps as
`x-kubernetes-preserve-unknown-fields`, each model's `cel_rules` as `x-kubernetes-validations`.
Pure: `crds()` returns text; `main` writes or checks files. No Kubernetes client here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from llmgate_operator import api

Schema = dict[str, Any]

# Keyword order in the output: readable top-down (what it is, what it holds, its bounds).
_ORDER = ("type", "description", "required", "properties", "additionalProperties", "items",
          "enum", "format", "pattern", "minimum", "maximum", "minLength", "maxLength",
          "minItems", "maxItems", "default", "x-kubernetes-preserve-unknown-fields",
          "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-validations")
_DROPPED = ("title", "$defs", "x-llmgate-nesting")
_NESTING = "x-llmgate-nesting"
_LABELS = {"app.kubernetes.io/name": "llmgate", "app.kubernetes.io/part-of": "llmgate"}


class SchemaError(ValueError):
    """A model that has no structural OpenAPI form (a union, an undeclared recursion)."""


def _leaf(model: Schema, nesting: Schema) -> Schema:
    """The deepest level of a self-referencing model: its group fields and rules removed."""
    props = {k: v for k, v in model["properties"].items() if k not in nesting["groupFields"]}
    rest = {k: v for k, v in model.items() if k not in ("x-kubernetes-validations", _NESTING)}
    return rest | {"properties": props, "required": nesting["leafRequired"],
                   "description": nesting["leafDescription"]}


def _flatten(node: Schema, defs: Schema, stack: tuple[str, ...],
             path: str) -> tuple[Schema, tuple[str, ...]]:
    """Resolve this level's `anyOf [X, null]` and `$ref` (the node's own keys win)."""
    if "anyOf" in node:
        alternatives = [a for a in node["anyOf"] if a.get("type") != "null"]
        if len(alternatives) != 1:
            raise SchemaError(f"{path}: a union has no structural schema")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if "default" in rest and rest["default"] is None:
            del rest["default"]       # Optional[X] = None: the field is simply left out
        inner, stack = _flatten(alternatives[0], defs, stack, path)
        return inner | rest, stack
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        model = defs[name]
        nesting = model.get(_NESTING)
        if name in stack and nesting is None:
            raise SchemaError(f"{path}: {name} refers to itself without api.Nesting")
        if nesting is not None and stack.count(name) >= nesting["depth"]:
            model = _leaf(model, nesting)
        rest = {k: v for k, v in node.items() if k != "$ref"}
        inner, stack = _flatten(model, defs, (*stack, name), path)
        return inner | rest, stack
    return node, stack


def _structural(node: Schema, defs: Schema, stack: tuple[str, ...], path: str) -> Schema:
    node, stack = _flatten(node, defs, stack, path)
    out: Schema = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "properties":
            value = {name: _structural(child, defs, stack, f"{path}.{name}")
                     for name, child in value.items()}
        elif key == "items":
            value = _structural(value, defs, stack, f"{path}[]")
        elif key == "additionalProperties":
            if value is False:        # extra="forbid": structural schemas drop unknown fields
                continue
            if value is True:         # dict[str, Any]: kept as written
                out["x-kubernetes-preserve-unknown-fields"] = True
                continue
            value = _structural(value, defs, stack, f"{path}{{}}")
        elif key == "const":
            key, value = "enum", [value]
        out[key] = value
    if out.get("type") == "string" and "enum" in out:
        # Bounds the API server's CEL cost estimate of rules that read the field.
        out.setdefault("maxLength", max(len(v) for v in out["enum"]))
    if "type" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        raise SchemaError(f"{path}: no type")
    unknown = set(out) - set(_ORDER)
    if unknown:
        raise SchemaError(f"{path}: keywords the generator does not know: {sorted(unknown)}")
    return {k: out[k] for k in _ORDER if k in out}


def model_schema(model: type[BaseModel]) -> Schema:
    """The structural OpenAPI v3 schema of one spec or status model."""
    schema = model.model_json_schema(by_alias=True)
    return _structural(schema, schema.get("$defs", {}), (), "")


def openapi_schema(resource: api.Resource) -> Schema:
    spec = model_schema(resource.spec)
    root: Schema = {
        "type": "object",
        "description": resource.description,
        "required": ["spec"] if spec.get("required") else [],
        "properties": {
            "apiVersion": {"type": "string", "description":
                           "Versioned schema of this object: llmgate.io/v1alpha1."},
            "kind": {"type": "string", "description": f"The kind of this object: {resource.kind}."},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": model_schema(resource.status),
        },
    }
    if not root["required"]:
        del root["required"]
    return root


def _column(column: api.PrinterColumn) -> Schema:
    out: Schema = {"name": column.name, "type": column.type, "jsonPath": column.json_path}
    if column.priority:
        out["priority"] = column.priority
    return out


def crd(resource: api.Resource) -> Schema:
    """The CustomResourceDefinition of one kind."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{resource.plural}.{api.GROUP}", "labels": dict(_LABELS)},
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {"kind": resource.kind, "listKind": f"{resource.kind}List",
                      "plural": resource.plural, "singular": resource.kind.lower(),
                      "shortNames": [resource.short_name], "categories": ["llmgate"]},
            "versions": [{
                "name": api.VERSION, "served": True, "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [_column(c) for c in resource.columns],
                "schema": {"openAPIV3Schema": openapi_schema(resource)},
            }],
        },
    }


def crd_yaml(resource: api.Resource) -> str:
    header = (f"# CustomResourceDefinition of {resource.kind} ({api.API_VERSION}).\n"
              "# Generated from operator/llmgate_operator/api.py by `make crds`: edit the models,\n"
              "# not this file (tests/contract/test_crdgen.py fails while it is out of date).\n")
    return header + yaml.safe_dump(crd(resource), sort_keys=False, width=100,
                                   allow_unicode=True)


def crds() -> dict[str, str]:
    """File name -> text of every CRD."""
    return {f"{r.plural}.yaml": crd_yaml(r) for r in api.RESOURCES}


def stale(directory: Path) -> list[str]:
    """Files of `directory` that differ from the generated ones (or are missing)."""
    return [name for name, text in crds().items()
            if not (directory / name).is_file() or (directory / name).read_text() != text]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmgate_operator.crdgen",
                                     description="Write (or --check) the generated CRDs.")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if any file is out of date")
    parser.add_argument("directories", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if args.check:
        out_of_date = [str(d / name) for d in args.directories for name in stale(d)]
        for path in out_of_date:
            print(f"{path} is out of date: run `make crds`", file=sys.stderr)
        return 1 if out_of_date else 0
    for directory in args.directories:
        for name, text in crds().items():
            (directory / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
