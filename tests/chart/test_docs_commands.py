"""The install and upgrade steps of README.md, docs/install.md and docs/upgrade.md, and the CI
and GitOps examples, checked as far as a machine without a cluster can: the images the docs
build are the images the chart then runs, every `--set` is a value the chart takes, every
path they name exists, the CI workflow's commands pass on a repository of CRs, and what the
Flux example waits for becomes Ready."""

from __future__ import annotations

import re
import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from llmgate_cli import main as llmgate
from llmgate_operator import api
from llmgate_operator.compile import compile_namespace

from tests.chart import rendering as r
from tests.contract import crd_schema as cs

ROOT = r.ROOT


def bash_blocks(path: Path) -> list[str]:
    """The ```bash blocks of a Markdown file, continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S)
    return [block.replace("\\\n", " ") for block in blocks]


def commands(block: str, env: dict[str, str]) -> list[list[str]]:
    out = []
    for line in block.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        assignment = re.fullmatch(r"([A-Z_]+)=(\S+)", line)
        if assignment:
            env[assignment[1]] = assignment[2]
            continue
        for part in line.split("&&"):
            words = shlex.split(re.sub(r"\$([A-Z_]+)", lambda m: env.get(m[1], m[0]), part))
            if words:
                out.append(words)
    return out


def installed_images(doc: Path, env: dict[str, str]) -> tuple[set[str], dict[str, Any]]:
    """(images the doc builds, the chart values its `helm install` sets)."""
    built: set[str] = set()
    values: dict[str, Any] = {}
    for block in bash_blocks(doc):
        for words in commands(block, env):
            if words[:2] == ["docker", "build"]:
                built.add(words[words.index("-t") + 1])
                assert (ROOT / words[words.index("-f") + 1]).is_file(), words
            if words[:2] == ["helm", "install"]:
                assert (ROOT / words[3] / "Chart.yaml").is_file(), words
                for i, word in enumerate(words):
                    if word == "--set":
                        values = _merge(values, helm.parse_set_string(words[i + 1]))
    return built, values


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(
            out.get(key), dict) else value
    return out


def running_images(values: dict[str, Any]) -> set[str]:
    container = r.operator_container(r.render(values))
    sidecar = next(a.split("=", 1)[1] for a in container["args"]
                   if a.startswith("--sidecar-image="))
    return {container["image"], sidecar}


@pytest.mark.parametrize("doc", ["README.md", "docs/install.md"])
def test_the_images_the_docs_build_are_the_ones_the_chart_runs(doc: str) -> None:
    built, values = installed_images(ROOT / doc, {"REGISTRY": "registry.example.com/x"})
    assert len(built) == 2, built
    r.chart().validate_schema(values)
    assert running_images(values) == built


def test_the_readme_applies_files_that_exist() -> None:
    for block in bash_blocks(ROOT / "README.md"):
        for words in commands(block, {}):
            if words[0] == "kubectl" and "-f" in words:
                assert (ROOT / words[words.index("-f") + 1]).exists(), words


def test_the_upgrade_steps() -> None:
    doc = ROOT / "docs" / "upgrade.md"
    text = doc.read_text()
    upgrade = None
    for block in bash_blocks(doc):
        for words in commands(block, {}):
            if words[:3] == ["kubectl", "apply", "--server-side"]:
                crds = ROOT / words[words.index("-f") + 1]
                assert sorted(p.read_text() for p in crds.glob("*.yaml") if p.stem in
                              api.PLURALS.values()) == sorted(
                                  p.read_text() for p in (ROOT / "crds").glob("*.yaml"))
            if words[:2] == ["helm", "upgrade"]:
                upgrade = words
    assert upgrade is not None and (ROOT / upgrade[3] / "Chart.yaml").is_file()
    values: dict[str, Any] = {}
    for i, word in enumerate(upgrade):
        if word == "--set":
            values = _merge(values, helm.parse_set_string(upgrade[i + 1]))
    assert {image.rsplit(":", 1)[1] for image in running_images(values)} == {"NEW"}
    for named in re.findall(r"`((?:deploy|tests|charts|docs|crds|examples)/[^`*\s]+)`", text):
        assert (ROOT / named).exists(), named


def test_the_ci_workflow_checks_a_repository_of_crs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    workflow = yaml.safe_load((ROOT / "deploy" / "ci" / "github-actions.yaml").read_text())
    env = dict(workflow["env"])
    assert "llmgate[validate]" in env["LLMGATE"]
    # A GitOps repository: the examples split over the two directories the workflow checks.
    for folder, files in (("clusters", ["providers.yaml", "quickstart.yaml"]),
                          ("apps", ["keys.yaml", "routing.yaml"])):
        (tmp_path / folder).mkdir()
        for name in files:
            (tmp_path / folder / name).write_text((ROOT / "examples" / name).read_text())
    monkeypatch.chdir(tmp_path)
    runs = [step["run"] for step in workflow["jobs"]["validate"]["steps"] if "run" in step]
    checked = 0
    for run in runs:
        for words in commands(run, env):
            if words[0] == "llmgate":
                assert llmgate(words[1:]) == 0, (words, capsys.readouterr())
                checked += 1
    assert checked == 3                     # version, validate, compile
    broken = tmp_path / "apps" / "broken.yaml"
    broken.write_text("apiVersion: llmgate.io/v1alpha1\nkind: LLMRoute\nmetadata: {name: x}\n"
                      "spec:\n  strategy: round-robin\n  targets: [{provider: mock, model: m}]\n")
    validate = next(w for run in runs for w in commands(run, env) if w[:2] == ["llmgate",
                                                                              "validate"])
    capsys.readouterr()
    assert llmgate(validate[1:]) == 1
    assert "::error file=apps/broken.yaml,line=5,col=3," in capsys.readouterr().out


def test_what_the_flux_kustomization_waits_for_becomes_ready() -> None:
    docs = {d["kind"]: d for d in cs.load_docs(ROOT / "deploy" / "gitops" /
                                              "flux-helmrelease.yaml")}
    spec = docs["Kustomization"]["spec"]
    assert spec["wait"] is True
    files = sorted((ROOT / spec["path"]).glob("*.yaml"))
    crs = [d for path in files for d in cs.load_docs(path) if cs.is_custom_resource(d)]
    secrets = {d["metadata"]["name"]: dict(d.get("stringData") or {})
               for path in files for d in cs.load_docs(path) if d["kind"] == "Secret"}
    for vk in (d for d in crs if d["kind"] == "VirtualKey"):   # the operator issues these
        name = vk["spec"].get("secretName") or api.default_secret_name(vk["metadata"]["name"])
        secrets.setdefault(name, {"api-key": "lg-issued"})
    result = compile_namespace("my-app", crs, secrets, now=datetime.now(UTC))
    assert {k: c.reason for k, c in result.conditions.items() if not c.ready} == {}
    assert len(result.conditions) == len(crs)
