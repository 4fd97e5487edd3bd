"""Render charts/llmgate with the real Helm SDK (helm-python-sdk) for the chart tests.

Used by tests/chart/test_chart.py. Returns parsed manifests and small lookups over them;
it asserts nothing itself. Rendering takes about a millisecond, so tests render freely.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "llmgate"
RELEASE = "gw"
NAMESPACE = "llmgate-system"

# Every optional feature switched on (what the "all features" tests render).
ALL_FEATURES: dict[str, Any] = {
    "operator": {"replicaCount": 2, "watchNamespaces": ["team-a", "team-b"],
                 "peering": {"enabled": True},
                 "logLevel": "DEBUG", "podAnnotations": {"example.com/owner": "platform"},
                 "extraEnv": [{"name": "TZ", "value": "UTC"}]},
    "webhook": {"failurePolicy": "Fail", "excludeNamespaces": ["monitoring"],
                "certManager": {"enabled": True}},
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
                "podMonitor": {"enabled": True}},
    "podDisruptionBudget": {"minAvailable": 1},
    "redis": {"enabled": True},
    "grafana": {"dashboard": {"enabled": True}},
}


def chart() -> helm.Chart:
    return helm.Chart.load(str(CHART_DIR))


def render(values: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every manifest the chart renders with `values` (NOTES.txt left out)."""
    out = chart().render(dict(values or {}), name=RELEASE, namespace=NAMESPACE,
                         is_install=True)
    docs: list[dict[str, Any]] = []
    for path, text in sorted(out.items()):
        if path.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def notes(values: Mapping[str, Any] | None = None) -> str:
    out = chart().render(dict(values or {}), name=RELEASE, namespace=NAMESPACE,
                         is_install=True)
    return str(next(text for path, text in out.items() if path.endswith("NOTES.txt")))


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The one manifest of `kind` (and `name`); KeyError when there is none or several."""
    hits = [d for d in docs if d["kind"] == kind
            and (name is None or d["metadata"]["name"] == name)]
    if len(hits) != 1:
        raise KeyError(f"{len(hits)} {kind} {name or ''} manifests rendered")
    return hits[0]


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = find(docs, "Deployment", f"{RELEASE}-llmgate")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)
