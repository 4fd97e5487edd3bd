"""checkov on the rendered chart: every failed check is justified in docs/security.md's table,
and every row of that table is a check that really fails (the table stays true).

checkov runs from its own venv (`make checkov` builds .tools/checkov; its dependency set is
large and pinned apart from the dev venv), with --skip-download so it calls no service.
`make test` builds it and passes its path in LLMGATE_CHECKOV, so there a missing checkov
fails; only a bare `pytest` without the venv skips it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.chart import rendering as r

CHECKOV = Path(os.environ.get("LLMGATE_CHECKOV")
               or r.ROOT / ".tools" / "checkov" / "bin" / "checkov")
SECURITY_MD = r.ROOT / "docs" / "security.md"
VALUE_SETS = {"default": {}, "redis": {"redis": {"enabled": True}},
              "all-features": r.ALL_FEATURES}
ROW = re.compile(r"^\| `(CKV_K8S_\d+)` \| ([^|]+) \| [^|]+ \|$")


def _checkov() -> Path:
    if not CHECKOV.exists():
        if os.environ.get("CI") or os.environ.get("LLMGATE_CHECKOV"):
            pytest.fail(f"{CHECKOV} missing: `make checkov` builds it")
        pytest.skip("checkov's venv is not built (make checkov)")
    return CHECKOV


def failed_checks(tmp_path: Path) -> set[tuple[str, str]]:
    """(check id, 'Kind name') of every failure over the value sets."""
    failures: set[tuple[str, str]] = set()
    for name, values in VALUE_SETS.items():
        manifest = tmp_path / f"{name}.yaml"
        manifest.write_text(yaml.safe_dump_all(r.render(values)))
        run = subprocess.run(
            [str(_checkov()), "-f", str(manifest), "--framework", "kubernetes", "-o", "json",
             "--quiet", "--compact", "--skip-download"],
            capture_output=True, text=True, timeout=110)
        report = json.loads(run.stdout)
        report = report[0] if isinstance(report, list) else report
        assert report["summary"]["parsing_errors"] == 0, run.stderr[-2000:]
        for check in report["results"]["failed_checks"]:
            kind, *_, resource = check["resource"].split(".")
            failures.add((check["check_id"], f"{kind} {resource}"))
    return failures


def justified() -> set[tuple[str, str]]:
    """(check id, 'Kind name') of each row of docs/security.md's checkov table."""
    rows: set[tuple[str, str]] = set()
    for line in SECURITY_MD.read_text().splitlines():
        match = ROW.match(line.strip())
        if match:
            for resource in match.group(2).split(","):
                rows.add((match.group(1), resource.strip().strip("`")))
    return rows


def test_every_checkov_failure_is_justified_and_every_justification_fails(
        tmp_path: Path) -> None:
    failures = failed_checks(tmp_path)
    documented = justified()
    assert failures - documented == set(), "fix these or justify them in docs/security.md"
    assert documented - failures == set(), "docs/security.md justifies checks that pass"
