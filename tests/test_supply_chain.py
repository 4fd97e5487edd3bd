"""The images' supply chain: each is built from a hash-locked dependency set that matches
pyproject.toml, on a base image pinned by digest, and gets a CycloneDX SBOM of that set.

Docker cannot run here, so the images are not built; what they are built from is checked:
the locks (fail when pyproject.toml changed and `make locks` was not run), the Dockerfiles'
install lines, and the SBOM `make sbom` produces (cyclonedx-py on the lock).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from supplychain import locks

LINUX_311 = {**default_environment(), "python_version": "3.11", "sys_platform": "linux",
             "platform_system": "Linux", "os_name": "posix"}
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+)")


def pins(extra: str) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, sha256 hashes) of every requirement in the lock."""
    found: dict[str, tuple[str, list[str]]] = {}
    current: str | None = None
    for line in locks.lock_path(extra).read_text().splitlines():
        match = PIN.match(line)
        if match:
            current = canonicalize_name(match.group(1))
            found[current] = (match.group(2), [])
        elif current and "--hash=sha256:" in line:
            found[current][1].append(line.split("--hash=sha256:")[1].strip(" \\"))
        elif line.strip() and not line.lstrip().startswith("#"):
            assert line.startswith(" "), f"unexpected lock line: {line!r}"
    return found


@pytest.mark.parametrize("extra", locks.IMAGES)
def test_lock_was_made_from_the_current_pyproject(extra: str) -> None:
    assert locks.recorded(extra) == locks.fingerprint(extra), (
        f"pyproject.toml changed what the {extra} image installs: run `make locks`")


@pytest.mark.parametrize("extra", locks.IMAGES)
def test_every_declared_dependency_is_pinned_with_hashes(extra: str) -> None:
    pinned = pins(extra)
    assert all(hashes for _, hashes in pinned.values())
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for _, hashes in pinned.values()
               for h in hashes)
    for text in locks.declared(extra):
        requirement = Requirement(text)
        if requirement.marker and not requirement.marker.evaluate(LINUX_311):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{text} is declared but not locked"
        assert requirement.specifier.contains(pinned[name][0], prereleases=True), \
            f"{name}=={pinned[name][0]} does not satisfy {text}"


def test_fingerprint_follows_pyproject(tmp_path: Path) -> None:
    changed = tmp_path / "pyproject.toml"
    changed.write_text(locks.PYPROJECT.read_text().replace('"orjson>=3.9"', '"orjson>=3.10"'))
    assert locks.fingerprint("sidecar", changed) != locks.fingerprint("sidecar")
    assert locks.fingerprint("operator", changed) == locks.fingerprint("operator")


def test_sidecar_image_stays_free_of_control_plane_dependencies() -> None:
    """Nor the CRD models' pydantic and YAML (the sidecar never imports them: issue 16),
    nor OpenTelemetry (only the `tracing` extra installs it)."""
    sidecar = set(pins("sidecar"))
    assert not {"kopf", "kubernetes", "kmock", "pydantic", "pydantic-core", "pyyaml",
                "annotated-types", "typing-inspection"} & sidecar
    assert not {name for name in sidecar if name.startswith("opentelemetry")}
    assert {"pydantic", "pydantic-core", "pyyaml"} <= set(pins("operator"))


@pytest.mark.parametrize("extra", locks.IMAGES)
def test_dockerfile_installs_only_the_lock_on_a_digest_pinned_base(extra: str) -> None:
    text = (locks.ROOT / f"Dockerfile.{extra}").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE$", text, re.M), "no tag-only default base image"
    assert all(line.split()[1].startswith("${PYTHON_IMAGE}")
               for line in text.splitlines() if line.startswith("FROM "))
    assert f"COPY supplychain/{extra}.lock.txt" in text
    assert f"--require-hashes --no-deps --only-binary=:all: -r {extra}.lock.txt" in text
    assert "pip install --no-deps /wheels/llmgate-" in text
    assert "[sidecar]" not in text and "[operator]" not in text  # no unlocked extras
    makefile = (locks.ROOT / "Makefile").read_text()
    assert "*@sha256:" in makefile and "PYTHON_IMAGE must be pinned by digest" in makefile


@pytest.mark.parametrize("extra", locks.IMAGES)
def test_sbom_lists_the_locked_set_with_hashes(extra: str, tmp_path: Path) -> None:
    cyclonedx = Path(sys.executable).with_name("cyclonedx-py")
    assert cyclonedx.exists(), "cyclonedx-bom is part of the dev extra"
    out = tmp_path / f"{extra}.cdx.json"
    subprocess.run([cyclonedx, "requirements", str(locks.lock_path(extra)), "--of", "JSON",
                    "--output-reproducible", "-o", str(out)], check=True, capture_output=True)
    bom = json.loads(out.read_text())
    assert bom["bomFormat"] == "CycloneDX" and bom["specVersion"] == "1.6"
    components = {canonicalize_name(c["name"]): c for c in bom["components"]}
    pinned = pins(extra)
    assert set(components) == set(pinned)
    for name, (version, hashes) in pinned.items():
        component = components[name]
        assert component["version"] == version
        assert component["purl"] == f"pkg:pypi/{name}@{version}"
        listed = {h["content"] for ref in component.get("externalReferences", [])
                  for h in ref.get("hashes", [])}
        assert listed == set(hashes)
