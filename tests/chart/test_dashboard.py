"""The Grafana dashboard the chart ships (valid JSON, real metrics, a valid ConfigMap) and
the HPA example in deploy/hpa.

Every PromQL expression may only name series the sidecar's or the operator's registry can
export (a renamed metric must break this test, not a panel in production); the ConfigMap is
off by default, carries the `grafana_dashboard: "1"` label Grafana's sidecar looks for, and
passes strict Kubernetes validation and `helm lint --strict`.
"""

from __future__ import annotations

import json
import re
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from llmgate_operator import ops, webhook_server
from llmgate_sidecar.observability.metrics import Metrics
from llmgate_sidecar.policy.redis_store import RedisStore
from prometheus_client import CollectorRegistry

from tests.chart import rendering as r

DASHBOARD = r.CHART_DIR / "dashboards" / "llmgate.json"
ENABLED = {"grafana": {"dashboard": {"enabled": True, "labels": {"release": "prom"},
                                     "annotations": {"grafana_folder": "LLM"}}}}
_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum"),
             "summary": ("", "_count", "_sum"), "info": ("_info",)}
_METRIC = re.compile(r"\bllmgate_[a-zA-Z0-9_]+")


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in board["panels"]:
        found.append(panel)
        found += panel.get("panels", [])
    return found


def expressions(board: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in panels(board) for t in p.get("targets", [])]
    exprs += [v["definition"] for v in board["templating"]["list"] if v["type"] == "query"]
    return exprs


def exported_series() -> set[str]:
    """Every series name the two processes' registries can expose."""
    sidecar = Metrics()
    store = RedisStore.from_url("redis://127.0.0.1:1/0")  # never connected: only its health
    sidecar.watch_store(store)
    operator = ops.OperatorMetrics(CollectorRegistry())
    webhook_server.create_metrics(operator.registry)  # main() shares one registry
    names: set[str] = set()
    for registry in (sidecar.registry, operator.registry):
        for family in registry.collect():
            names |= {family.name + suffix for suffix in _SUFFIXES[family.type]}
    return names


def test_dashboard_is_grafana_json_with_unique_panel_ids() -> None:
    board = dashboard()
    assert board["uid"] == "llmgate-overview" and board["schemaVersion"] >= 36
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids))
    for panel in panels(board):
        if panel["type"] != "row":
            assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}"
            assert all(t["expr"].count("(") == t["expr"].count(")") for t in panel["targets"])


def test_every_query_names_a_metric_the_registries_export() -> None:
    exported = exported_series()
    used = {name for expr in expressions(dashboard()) for name in _METRIC.findall(expr)}
    assert used, "the dashboard queries nothing"
    assert sorted(used - exported) == []
    # The questions the dashboard exists to answer each have their series on it.
    for needed in ("llmgate_cost_usd_total", "llmgate_upstream_errors_total",
                   "llmgate_gateway_overhead_seconds_bucket", "llmgate_in_flight_requests",
                   "llmgate_time_to_first_token_seconds_bucket", "llmgate_fallbacks_total",
                   "llmgate_cache_requests_total", "llmgate_rejections_total",
                   "llmgate_budget_remaining_usd", "llmgate_operator_reconciles_total"):
        assert needed in used, needed


def test_the_checker_catches_a_misspelt_metric() -> None:
    exported = exported_series()
    assert "llmgate_requests_total" in exported
    assert "llmgate_request_total" not in exported        # singular: a typo
    assert "llmgate_cost_usd" not in exported             # a counter without _total


def test_dashboard_configmap_is_off_by_default_and_valid_when_on() -> None:
    assert not [d for d in r.render() if d["kind"] == "ConfigMap"]
    docs = r.render(ENABLED)
    config_map = r.find(docs, "ConfigMap", f"{r.RELEASE}-llmgate-dashboard")
    labels = config_map["metadata"]["labels"]
    assert labels["grafana_dashboard"] == "1" and labels["release"] == "prom"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "LLM"}
    assert config_map["metadata"]["namespace"] == r.NAMESPACE
    assert json.loads(config_map["data"]["llmgate.json"]) == dashboard()
    assert kubernetes_validate.validate(config_map, "1.30.0", strict=True) == "1.30"
    moved = r.render({"grafana": {"dashboard": {"enabled": True, "namespace": "monitoring"}}})
    assert r.find(moved, "ConfigMap")["metadata"]["namespace"] == "monitoring"


def test_chart_with_dashboard_lints_strictly() -> None:
    report = helm.lint(str(r.CHART_DIR), ENABLED, strict=True, kube_version="v1.30.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("values", [
    {"grafana": {"dashboard": {"enabled": "yes"}}},
    {"grafana": {"dashboard": {"namespace": "Monitoring!"}}},
    {"grafana": {"dashbord": {"enabled": True}}},
], ids=str)
def test_schema_rejects_bad_dashboard_values(values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        r.render(values)


def test_hpa_example_scales_on_a_metric_the_sidecar_exports() -> None:
    deploy = r.ROOT / "deploy" / "hpa"
    hpa = yaml.safe_load((deploy / "hpa.yaml").read_text())
    assert kubernetes_validate.validate(hpa, "1.30.0", strict=True) == "1.30"
    [metric] = hpa["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    assert name == "llmgate_in_flight_requests" and name in exported_series()
    adapter = yaml.safe_load((deploy / "prometheus-adapter-values.yaml").read_text())
    [rule] = adapter["rules"]["custom"]
    assert rule["name"]["as"] == name and rule["seriesQuery"].startswith(name + "{")
