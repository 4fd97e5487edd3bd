"""What can be checked here of the images, the e2e run and the GitOps examples.

There is no Docker and no kind on this machine, so e2e/run.sh cannot run; these tests catch
what would break it before anyone does: the script parses, the Dockerfiles copy files that
exist and are in the build context, the e2e manifests and GitOps examples are valid and
agree with each other, and the image entrypoint imports.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from llmgate_operator import api
from llmgate_operator.compile import compile_namespace

from tests.chart import rendering as r
from tests.contract import crd_schema as cs

ROOT = cs.ROOT
E2E = ROOT / "e2e"
MANIFESTS = sorted((E2E / "manifests").glob("*.yaml"))
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DOCKERFILES = {"Dockerfile.sidecar": "sidecar", "Dockerfile.operator": "operator"}


# --- e2e/run.sh -----------------------------------------------------------------------------

def test_e2e_script_parses_and_is_strict() -> None:
    script = E2E / "run.sh"
    bash = shutil.which("bash")
    assert bash is not None
    result = subprocess.run([bash, "-n", str(script)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    text = script.read_text()
    assert "set -euo pipefail" in text
    assert "trap cleanup EXIT" in text and "KEEP_CLUSTER" in text
    assert os.access(script, os.X_OK)
    for manifest in MANIFESTS:
        assert f"e2e/manifests/{manifest.name}" in text, manifest.name


# --- Dockerfiles ----------------------------------------------------------------------------

def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    logical, current = [], ""
    for line in path.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            logical.append(current.strip())
            current = ""
    return [(s.split(None, 1)[0].upper(), s.split(None, 1)[1]) for s in logical]


def _dockerignored(rel: str) -> bool:
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    parts = Path(rel).parts
    return any(fnmatch.fnmatch("/".join(parts[:i]), p.rstrip("/"))
               for p in patterns for i in range(1, len(parts) + 1))


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_copies_what_exists_in_the_build_context(name: str) -> None:
    copied = []
    for op, args in _instructions(ROOT / name):
        if op == "COPY" and not args.startswith("--from"):
            *sources, _dest = args.split()
            copied += [s.rstrip("/") for s in sources]
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), source
        assert not _dockerignored(source), f"{source} is excluded by .dockerignore"
    # Everything the wheel build needs: the package roots and the readme.
    roots = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["where"]
    assert set(roots) | {"pyproject.toml", PYPROJECT["project"]["readme"]} <= set(copied)
    assert _dockerignored(".venv") and _dockerignored(".git") and _dockerignored("tests")


@pytest.mark.parametrize("name,extra", DOCKERFILES.items())
def test_dockerfile_final_stage_per_interfaces(name: str, extra: str) -> None:
    steps = _instructions(ROOT / name)
    stages = [i for i, (op, _) in enumerate(steps) if op == "FROM"]
    assert len(stages) == 2, "multi-stage: a build stage and a slim final stage"
    final = steps[stages[-1]:]
    assert ("USER", "65532:65532") in final
    assert ("ENTRYPOINT", '["llmgate"]') in final
    assert ("CMD", json.dumps([extra])) in final
    assert any(op == "COPY" and args.startswith("--from=build /opt/venv") for op, args in final)
    assert not any(op == "RUN" for op, _ in final), "nothing is installed in the final stage"
    # The base image only by digest, given at build time (tests/test_supply_chain.py).
    assert ("ARG", "PYTHON_IMAGE") in steps
    install = next(a for op, a in steps if op == "RUN" and "pip install" in a)
    assert f"-r {extra}.lock.txt" in install
    assert extra in PYPROJECT["project"]["optional-dependencies"]


def test_image_entrypoint_imports_and_dispatches(capsys: pytest.CaptureFixture[str]) -> None:
    assert PYPROJECT["project"]["scripts"]["llmgate"] == "llmgate_cli:main"
    import llmgate_cli

    assert llmgate_cli.main(["--help"]) == 0
    usage = capsys.readouterr().out
    assert "sidecar" in usage and "operator" in usage


# --- e2e manifests --------------------------------------------------------------------------

def _docs(paths: list[Path]) -> list[dict[str, Any]]:
    return [doc for path in paths for doc in cs.load_docs(path)]


def test_e2e_manifests_are_valid() -> None:
    docs = _docs(MANIFESTS)
    assert {d["kind"] for d in docs} == {"Namespace", "ProviderSecret", "LLMRoute",
                                         "VirtualKey", "Job"}
    for doc in docs:
        if cs.is_custom_resource(doc):
            api.parse_spec(doc["kind"], doc["spec"])
            assert cs.schema_errors(doc) == [], doc["metadata"]["name"]
        else:
            assert kubernetes_validate.validate(doc, "1.30.0", strict=True) == "1.30"


def test_e2e_manifests_pass_cel_rules() -> None:
    pytest.importorskip("celpy", reason="pip install cel-python to evaluate the CEL rules")
    for doc in _docs(MANIFESTS):
        if cs.is_custom_resource(doc):
            assert cs.cel_errors(doc) == []


def test_e2e_gateway_compiles_ready_and_matches_the_client() -> None:
    docs = _docs(MANIFESTS)
    crs = [d for d in docs if cs.is_custom_resource(d)]
    keys = [d["metadata"]["name"] for d in crs if d["kind"] == "VirtualKey"]
    secrets = {api.default_secret_name(k): {"api-key": f"lg-test-{k}"} for k in keys}
    result = compile_namespace("llmgate-e2e", crs, secrets, now=datetime.now(UTC))
    assert all(c.ready for c in result.conditions.values()), result.conditions
    limited = next(k for k in result.config.virtual_keys if k.name == "e2e-limited")
    assert limited.limits.requests_per_minute == 5          # the burst of 8 must hit it
    assert next(k for k in result.config.virtual_keys if k.name == "e2e-budget").budget
    [route] = result.config.routes
    job = next(d for d in docs if d["kind"] == "Job")
    pod = job["spec"]["template"]
    assert pod["metadata"]["labels"]["llmgate.io/inject"] == "true"
    [client] = pod["spec"]["containers"]
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in client["env"]}
    assert refs == set(secrets)                      # the Secrets the operator issues
    assert all(e["valueFrom"]["secretKeyRef"]["key"] == "api-key" for e in client["env"])
    assert f'"model": "{route.model}"' in client["args"][0]
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {
        next(d for d in docs if d["kind"] == "Namespace")["metadata"]["name"]}


# --- GitOps examples ------------------------------------------------------------------------

GITOPS = ROOT / "deploy" / "gitops"


def test_argocd_application_installs_this_chart() -> None:
    [app] = cs.load_docs(GITOPS / "argocd-application.yaml")
    assert app["kind"] == "Application"
    source = app["spec"]["source"]
    assert (ROOT / source["path"] / "Chart.yaml").exists()
    r.chart().validate_schema(source["helm"]["valuesObject"])
    ignored = app["spec"]["ignoreDifferences"][0]
    assert ignored["name"] == r.chart().values["webhook"]["configName"]


def test_argocd_health_checks_every_kind() -> None:
    [cm] = cs.load_docs(GITOPS / "argocd-health.yaml")
    assert kubernetes_validate.validate(cm, "1.30.0", strict=True) == "1.30"
    for kind in api.SPEC_MODELS:
        script = cm["data"][f"resource.customizations.health.llmgate.io_{kind}"]
        assert 'c.type == "Ready"' in script and "Degraded" in script


def test_flux_release_installs_this_chart() -> None:
    docs = {d["kind"]: d for d in cs.load_docs(GITOPS / "flux-helmrelease.yaml")}
    assert set(docs) == {"GitRepository", "HelmRelease", "Kustomization"}
    release = docs["HelmRelease"]["spec"]
    assert (ROOT / release["chart"]["spec"]["chart"] / "Chart.yaml").exists()
    assert release["chart"]["spec"]["sourceRef"]["name"] == docs["GitRepository"][
        "metadata"]["name"]
    assert release["install"]["crds"] == "CreateReplace"
    r.chart().validate_schema(release["values"])
    assert (ROOT / docs["Kustomization"]["spec"]["path"]).is_dir()
