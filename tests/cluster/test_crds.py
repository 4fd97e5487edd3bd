"""Group 2: the real API server enforces our CRDs (schemas, CEL rules, printer columns).

Each known-bad CR of the suite (tests/data/crs/bad/) is refused by the API server itself,
with kubectl's default strict field validation (422 Invalid; 400 for an unknown field);
each example CR is accepted with everything it says kept (the server only adds schema
defaults); `kubectl get`-style tables show the printer columns for real objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from llmgate_operator import api as crds

from tests.cluster.api import TABLE, Api, ApiError, load_docs, path, path_of
from tests.cluster.binaries import ROOT
from tests.cluster.release import Release

BAD = sorted((ROOT / "tests" / "data" / "crs" / "bad").glob("*.yaml"))
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
NS = "crd-checks"


@pytest.fixture(scope="module")
def namespace(admin: Api, release: Release) -> str:
    admin.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    return NS


def _dry_run_create(admin: Api, body: dict[str, Any], namespace: str) -> dict[str, Any]:
    return dict(admin.request("POST", path(body["kind"], namespace), body,
                              params={"dryRun": "All", "fieldValidation": "Strict"}))


@pytest.mark.parametrize("file", BAD, ids=[p.stem for p in BAD])
def test_known_bad_cr_is_rejected_by_the_api_server(admin: Api, namespace: str,
                                                    file: Path) -> None:
    [body] = load_docs(file)
    with pytest.raises(ApiError) as refused:
        _dry_run_create(admin, body, namespace)
    if refused.value.status == 400:  # strict field validation answers 400, not 422
        assert "strict decoding error: unknown field" in refused.value.message
    else:
        assert refused.value.status == 422, refused.value.body
        assert refused.value.body["reason"] == "Invalid", refused.value.body
    if "# enforced-by: cel" in file.read_text():
        # A CEL rule's own message, not a schema error, is what the user reads.
        rules = _cel_messages(body["kind"])
        assert any(message in refused.value.message for message in rules), \
            (refused.value.message, rules)


def _cel_messages(kind: str) -> list[str]:
    crd = next(doc for doc in load_docs(ROOT / "crds" / f"{crds.PLURALS[kind]}.yaml"))
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for rule in node.get("x-kubernetes-validations") or []:
                found.append(rule.get("message") or rule["rule"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(crd["spec"]["versions"][0]["schema"])
    return found


EXAMPLE_CRS = [(f"{file.stem}:{doc['kind']}/{doc['metadata']['name']}", doc)
               for file in EXAMPLES for doc in load_docs(file)
               if doc["apiVersion"].startswith(crds.GROUP)]


@pytest.mark.parametrize("body", [doc for _, doc in EXAMPLE_CRS],
                         ids=[name for name, _ in EXAMPLE_CRS])
def test_example_cr_is_accepted_unchanged(admin: Api, namespace: str,
                                          body: dict[str, Any]) -> None:
    stored = _dry_run_create(admin, body, namespace)
    # Everything the user wrote is kept (nothing pruned); the server may only add defaults.
    missing = _not_kept(body["spec"], stored["spec"], "spec")
    assert not missing, missing


def _not_kept(sent: Any, stored: Any, where: str) -> list[str]:
    if isinstance(sent, dict) and isinstance(stored, dict):
        return [problem for key, value in sent.items()
                for problem in (_not_kept(value, stored[key], f"{where}.{key}")
                                if key in stored else [f"{where}.{key} pruned"])]
    if isinstance(sent, list) and isinstance(stored, list) and len(sent) == len(stored):
        return [p for i, (a, b) in enumerate(zip(sent, stored, strict=True))
                for p in _not_kept(a, b, f"{where}[{i}]")]
    return [] if sent == stored else [f"{where}: sent {sent!r}, stored {stored!r}"]


def test_printer_columns_come_back_as_a_table(admin: Api, namespace: str) -> None:
    for doc in load_docs(ROOT / "examples" / "quickstart.yaml"):
        admin.apply(doc, namespace)
    for kind, plural in crds.PLURALS.items():
        crd = admin.must(path("CustomResourceDefinition", name=f"{plural}.{crds.GROUP}"))
        declared = [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]
        table = admin.request("GET", path(kind, namespace), accept=TABLE)
        assert table["kind"] == "Table", table
        columns = [c["name"] for c in table["columnDefinitions"]]
        assert columns == ["Name", *declared], (kind, columns)
        assert table["rows"], f"no {kind} rows"
        for row in table["rows"]:
            assert len(row["cells"]) == len(columns)
    route_table = admin.request("GET", path("LLMRoute", namespace, "gpt-4o-mini"),
                                accept=TABLE)
    [row] = route_table["rows"]
    cells = dict(zip([c["name"] for c in route_table["columnDefinitions"]], row["cells"],
                     strict=True))
    assert cells["Name"] == "gpt-4o-mini"
    for doc in load_docs(ROOT / "examples" / "quickstart.yaml"):
        admin.delete(path_of(doc, namespace))
