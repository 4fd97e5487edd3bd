"""docs/reference.md, generated: every CR field (from the CRDs `crdgen` builds) and every field
of the compiled config (from the contract models), with what it means and where it comes from.

Pure text from the models; `make crds` writes it and tests/contract/test_reference.py fails
while the committed file is out of date. No I/O beyond `main`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import msgspec
from llmgate_contract import config as contract
from llmgate_contract.versions import FieldSpec, struct_fields

from llmgate_operator import api, crdgen

_BOUNDS = (("enum", "one of {}"), ("pattern", "pattern `{}`"), ("format", "{}"),
           ("minimum", "≥ {}"), ("maximum", "≤ {}"), ("minLength", "length ≥ {}"),
           ("maxLength", "length ≤ {}"), ("minItems", "≥ {} items"), ("maxItems", "≤ {} items"))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _type(node: dict[str, Any]) -> str:
    if node.get("type") == "array":
        return f"[]{_type(node['items'])}"
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        return f"map[string]{_type(extra)}"
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return "object (free-form)"
    return str(node.get("type", "any"))


def _bounds(node: dict[str, Any]) -> str:
    parts = []
    for key, form in _BOUNDS:
        if key in node:
            value = node[key]
            shown = ", ".join(f"`{v}`" for v in value) if key == "enum" else value
            parts.append(form.format(shown))
    if "default" in node:
        parts.append(f"default `{node['default']}`")
    return "; ".join(parts)


def _crd_rows(node: dict[str, Any], path: str, required: bool) -> Iterator[str]:
    shown = node.get("items", node) if node.get("type") == "array" else node
    flags = "**required**. " if required else ""
    yield (f"| `{path}` | {_type(node)} | {_cell(_bounds(shown))} | "
           f"{_cell(flags + node.get('description', ''))} |")
    if path.endswith("targets") and ".targets" in path.removesuffix(".targets"):
        return            # a nested group's children: the same fields as the level above
    child = node.get("items") if node.get("type") == "array" else node
    if isinstance(child, dict) and isinstance(child.get("additionalProperties"), dict):
        child = child["additionalProperties"]
        path += "{}"
    elif node.get("type") == "array":
        path += "[]"
    if not isinstance(child, dict):
        return
    needed = set(child.get("required", []))
    for name, sub in child.get("properties", {}).items():
        yield from _crd_rows(sub, f"{path}.{name}", name in needed)


def crd_reference() -> list[str]:
    lines = [f"## Custom resources (`{api.API_VERSION}`)", ""]
    for resource in api.RESOURCES:
        spec = crdgen.model_schema(resource.spec)
        lines += [f"### {resource.kind} (`{resource.short_name}`)", "",
                  resource.description, "",
                  "| field | type | bounds and default | meaning |", "|---|---|---|---|"]
        needed = set(spec.get("required", []))
        for name, node in spec["properties"].items():
            lines += _crd_rows(node, f"spec.{name}", name in needed)
        lines.append("")
    return lines


def _models(model: type[msgspec.Struct],
            seen: list[type[msgspec.Struct]]) -> list[type[msgspec.Struct]]:
    """`model` and every struct its fields hold, depth first, each once."""
    if model in seen:
        return seen
    seen.append(model)
    for spec in struct_fields(model):
        for inner in _inner_types(spec.type):
            if isinstance(inner, type) and issubclass(inner, msgspec.Struct):
                _models(inner, seen)
    return seen


def _inner_types(annotation: Any) -> Iterator[Any]:
    yield annotation
    for arg in get_args(annotation):
        yield from _inner_types(arg)


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _type_name(get_args(annotation)[0])
    args = [a for a in get_args(annotation) if a is not type(None)]
    if origin is list:
        return f"list[{_type_name(args[0])}]"
    if origin is dict:
        return f"dict[{_type_name(args[0])}, {_type_name(args[1])}]"
    if str(origin) == "typing.Literal":
        return " | ".join(f"`{a}`" for a in get_args(annotation))
    if args and origin is not None:
        names = [_type_name(a) for a in args]
        optional = type(None) in get_args(annotation)
        return " | ".join(names) + (" | None" if optional else "")
    return getattr(annotation, "__name__", str(annotation))


def _default(spec: FieldSpec) -> str:
    if spec.required:
        return "**required**"
    value = spec.default_value()
    if isinstance(value, msgspec.Struct):
        return "its fields' defaults"
    return f"`{value}`"


def config_fields() -> Iterator[tuple[type[msgspec.Struct], str, FieldSpec]]:
    """(struct, JSON name, field) of every field of the compiled config."""
    for model in _models(contract.CompiledConfig, []):
        for spec in struct_fields(model):
            yield model, spec.key, spec


def config_reference() -> list[str]:
    lines = [f"## Compiled config (schema version {contract.SCHEMA_VERSION})", "",
             "What the operator writes into the `llmgate-config` ConfigMap and every sidecar "
             "reads (`llmgate_contract.config`). Durations are seconds, money is decimal USD.", ""]
    current: type[msgspec.Struct] | None = None
    for model, name, spec in config_fields():
        if model is not current:
            current = model
            lines += ["", f"### {model.__name__}", "", _cell(model.__doc__ or ""), "",
                      "| field | type | default | meaning and source |", "|---|---|---|---|"]
        lines.append(f"| `{name}` | {_cell(_type_name(spec.type))} | "
                     f"{_cell(_default(spec))} | {_cell(spec.description)} |")
    return lines


def reference() -> str:
    lines = ["# Reference: custom resources and the compiled config", "",
             "<!-- Generated from operator/llmgate_operator/api.py and "
             "contract/llmgate_contract/config.py by `make crds`: edit the models, not this "
             "file. -->", "",
             *crd_reference(), *config_reference()]
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmgate_operator.reference",
                                     description="Write (or --check) docs/reference.md.")
    parser.add_argument("--check", action="store_true")
    parser.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    text = reference()
    if args.check:
        current = args.path.read_text() if args.path.is_file() else ""
        if current != text:
            print(f"{args.path} is out of date: run `make crds`", file=sys.stderr)
            return 1
        return 0
    args.path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
