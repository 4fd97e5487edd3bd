"""Validate custom resources against the CRDs in `crds/`, as the API server would.

Used by tests/contract/test_crds.py and tests/chart/test_packaging.py. There is no API
server here, so this emulates the parts that matter: the OpenAPI schema (as jsonschema
Draft 4, the conversion of TESTING-TOOLS.md §4), unknown fields rejected as kubectl's
default `--validate=strict` makes the server do, and the CEL `x-kubernetes-validations`
(evaluated with cel-python when it is installed). Test helpers only; no assertions here.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from llmgate_operator import crdcheck

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


to_jsonschema = crdcheck.to_jsonschema
all_cel_rules = crdcheck.all_rules
cel_program = crdcheck.cel_program


def schema_errors(cr: dict[str, Any]) -> list[str]:
    """OpenAPI-schema errors of a CR, as 'path: message' lines (empty = valid)."""
    return [f"{'.'.join(str(p) for p in f.path) or '<root>'}: {f.message}"
            for f in crdcheck.schema_findings(openapi_schema(cr["kind"]), cr)]


def cel_errors(cr: dict[str, Any]) -> list[str]:
    """Messages of the CEL rules a CR breaks."""
    return [f"{'.' + '.'.join(str(p) for p in f.path) if f.path else '<root>'}: {f.message}"
            for f in crdcheck.cel_findings(openapi_schema(cr["kind"]), cr)]


def is_custom_resource(doc: dict[str, Any]) -> bool:
    return str(doc.get("apiVersion", "")).startswith(f"{GROUP}/")
