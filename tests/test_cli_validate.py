"""`llmgate validate`, `compile` and `version`, run as a user would (the `llmgate` entry point,
in-process): every known-bad CR of the suite is caught at its file and line with exit 1,
the examples pass, misspelt kinds are errors and foreign objects are reported as ignored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from llmgate_cli import main

ROOT = Path(__file__).resolve().parent.parent
BAD = sorted((ROOT / "tests" / "data" / "crs" / "bad").glob("*.yaml"))
GOLDEN = ROOT / "tests" / "data" / "golden"

# The line of each known-bad CR that holds the mistake (or, for a missing field, its parent).
BAD_LINES = {
    "route-unknown-field.yaml": "  fallbacks: [timeout]",
    "route-bad-strategy.yaml": "  strategy: round-robin",
    "ps-price-float.yaml": "inputPerMillion: 2.5",
    "vk-zero-rpm.yaml": "requestsPerMinute: 0",
    "route-negative-weight.yaml": "weight: -1",
    "ps-aws-half-keys.yaml": "  aws:",
}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def validate_json(capsys: pytest.CaptureFixture[str], *paths: Path,
                  extra: tuple[str, ...] = ()) -> tuple[int, dict[str, Any]]:
    args = [a for p in paths for a in ("-f", str(p))]
    code, out, _ = run(capsys, "validate", *args, "-o", "json", *extra)
    return code, json.loads(out)


@pytest.mark.parametrize("path", BAD, ids=[p.name for p in BAD])
def test_each_known_bad_cr_fails_with_its_file_and_line(
        path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = validate_json(capsys, path)
    assert code == 1
    errors = [p for p in report["problems"] if p["severity"] == "error"]
    assert errors, report
    lines = path.read_text().splitlines()
    first_line = next(i for i, text in enumerate(lines, 1) if text.startswith("apiVersion"))
    for error in errors:
        assert error["file"] == str(path)
        assert first_line <= error["line"] <= len(lines), error
        assert error["object"] == f"{_kind(lines)}/bad"
    if path.name in BAD_LINES:
        assert any(BAD_LINES[path.name] in lines[e["line"] - 1] for e in errors), errors


def _kind(lines: list[str]) -> str:
    return next(t.split(":", 1)[1].strip() for t in lines if t.startswith("kind:"))


def test_known_bad_crs_together_text_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "validate", "-f", str(BAD[0].parent))
    assert code == 1
    for path in BAD:
        assert f"{path}:" in out, path     # every file named, with a line
    assert f"{len(BAD)} invalid" in err


def test_examples_are_valid(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = validate_json(capsys, ROOT / "examples")
    assert code == 0, report["problems"]
    assert report["summary"]["errors"] == 0 and report["summary"]["warnings"] == 0
    assert report["summary"]["valid"] > 10


def test_misspelt_kind_wrong_version_and_foreign_objects(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "crs.yaml").write_text(
        "apiVersion: llmgate.io/v1alpha1\nkind: LLMRoutes\nmetadata: {name: a}\n"
        "spec: {targets: [{provider: p, model: m}]}\n"
        "---\napiVersion: llmgate.io/v1\nkind: LLMRoute\nmetadata: {name: b}\n"
        "spec: {targets: [{provider: p, model: m}]}\n"
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
        "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n")
    code, report = validate_json(capsys, tmp_path)
    assert code == 1
    by_line = {p["line"]: p for p in report["problems"]}
    assert by_line[2]["severity"] == "error" and "did you mean LLMRoute" in by_line[2]["message"]
    assert by_line[6]["severity"] == "error" and "v1alpha1" in by_line[6]["message"]
    assert by_line[11]["severity"] == "notice" and "ignored" in by_line[11]["message"]
    assert by_line[15]["severity"] == "notice" and "Deployment" in by_line[15]["message"]
    assert report["summary"] == {"documents": 4, "valid": 0, "invalid": 2, "errors": 2,
                                 "warnings": 0, "ignored": 2}


def test_semantic_checks_the_operator_makes(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """What passes the CRD but not the operator: a duplicate model name (error), a provider
    that needs a key but has none (error), a target naming a provider not in the files
    (warning: it may live elsewhere), a YAML duplicate key, a broken blockPatterns regex."""
    (tmp_path / "a.yaml").write_text(
        "apiVersion: llmgate.io/v1alpha1\nkind: ProviderSecret\nmetadata: {name: oa}\n"
        "spec: {provider: openai}\n"
        "---\napiVersion: llmgate.io/v1alpha1\nkind: ProviderSecret\nmetadata: {name: m}\n"
        "spec: {provider: mock}\n"
        "---\napiVersion: llmgate.io/v1alpha1\nkind: LLMRoute\nmetadata: {name: one}\n"
        "spec:\n  model: shared\n  targets:\n    - {provider: m, model: x}\n"
        "---\napiVersion: llmgate.io/v1alpha1\nkind: LLMRoute\nmetadata: {name: two}\n"
        "spec:\n  model: shared\n  targets:\n    - {provider: m, model: x}\n"
        "---\napiVersion: llmgate.io/v1alpha1\nkind: LLMRoute\nmetadata: {name: three}\n"
        "spec:\n  targets:\n    - {provider: elsewhere, model: x}\n"
        "---\napiVersion: llmgate.io/v1alpha1\nkind: LLMRoute\nmetadata: {name: four}\n"
        "spec:\n  targets: [{provider: m, model: x}]\n  guardrails: {blockPatterns: ['(']}\n"
        "  strategy: cost\n  strategy: latency\n")
    code, report = validate_json(capsys, tmp_path)
    assert code == 1
    found = {(p["object"], p["severity"], p["line"]): p["message"] for p in report["problems"]}
    assert "MissingCredentials" in found[("ProviderSecret/oa", "error", 4)]
    assert "DuplicateModel" in found[("LLMRoute/two", "error", 23)]
    assert "elsewhere" in found[("LLMRoute/three", "warning", 32)]
    assert "is not accepted" in found[("LLMRoute/four", "error", 39)]
    assert "duplicate key" in found[("LLMRoute/four", "error", 41)]


def test_github_annotations(capsys: pytest.CaptureFixture[str]) -> None:
    path = next(p for p in BAD if p.name == "route-bad-strategy.yaml")
    code, out, _ = run(capsys, "validate", "-f", str(path), "-o", "github")
    assert code == 1
    lines = path.read_text().splitlines()
    line = next(i for i, t in enumerate(lines, 1) if "strategy: round-robin" in t)
    assert out.startswith(f"::error file={path},line={line},col=3,title=llmgate validate::"
                          "LLMRoute/bad spec.strategy: ")


def test_missing_path_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "validate", "-f", "/nonexistent/crs.yaml")
    assert code == 2 and "no such file" in err


def test_invalid_yaml_has_a_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x.yaml").write_text("apiVersion: v1\nkind: Secret\nmetadata: {name: [\n")
    code, report = validate_json(capsys, tmp_path / "x.yaml")
    assert code == 1
    [problem] = report["problems"]
    assert problem["source"] == "yaml" and problem["line"] == 4


def test_compile_prints_the_golden_config(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "compile", "-f", str(GOLDEN / "quickstart" / "crs.yaml"),
                       "-n", "golden")
    assert code == 0
    assert json.loads(out) == json.loads((GOLDEN / "quickstart" / "config.json").read_text())


def test_compile_leaves_out_keys_without_a_secret(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "vk.yaml").write_text(
        "apiVersion: llmgate.io/v1alpha1\nkind: VirtualKey\nmetadata: {name: k}\nspec: {}\n")
    code, out, err = run(capsys, "compile", "-f", str(tmp_path))
    assert code == 0
    assert json.loads(out)["virtualKeys"] == []
    assert f"{tmp_path / 'vk.yaml'}:1:1: warning: VirtualKey/k: left out" in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "version", "-o", "json")
    info = json.loads(out)
    from llmgate_contract.config import MIN_SCHEMA_VERSION, SCHEMA_VERSION
    assert code == 0 and info["api"] == "llmgate.io/v1alpha1"
    assert info["configSchema"] == {"writes": SCHEMA_VERSION,
                                    "reads": [MIN_SCHEMA_VERSION, SCHEMA_VERSION]}
    assert info["version"] != "unknown"


def test_secret_headers_validate_and_a_bad_header_name_is_an_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    crs = ("apiVersion: llmgate.io/v1alpha1\nkind: ProviderSecret\nmetadata: {name: oa}\n"
           "spec:\n  provider: openai\n"
           "  apiKey: {secretKeyRef: {name: creds, key: k}}\n"
           "  secretHeaders:\n    %s: {secretKeyRef: {name: creds, key: h}}\n"
           "---\napiVersion: v1\nkind: Secret\nmetadata: {name: creds}\n"
           "stringData: {k: sk-1, h: hv-1}\n")
    (tmp_path / "a.yaml").write_text(crs % "X-Api-Key")
    code, report = validate_json(capsys, tmp_path)
    assert (code, report["problems"]) == (0, [])
    (tmp_path / "a.yaml").write_text(crs % "'X Api Key'")
    code, report = validate_json(capsys, tmp_path)
    assert code == 1
    assert "secretHeaders" in report["problems"][0]["message"]
