"""Sidecar rollout visibility: the operator reports which sidecar versions run in each
namespace (the metric `llmgate_operator_sidecar_pods{version}`, an Event `SidecarVersions` and
the annotation `llmgate.io/sidecar-versions` on its `llmgate-config`), so an upgrade can be
finished deliberately (docs/upgrade.md). Pure helpers first, then the real operator."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from llmgate_contract import CONFIGMAP_NAME
from llmgate_operator.injection import SIDECAR_NAME
from llmgate_operator.rollout import VERSIONS_ANNOTATION, describe, image_version, sidecar_image

from tests.operator import harness as h
from tests.operator.emulator import Emu
from tests.operator.test_operator import NS, _events, apply_all, quickstart

OLD = "registry.example.com/llmgate-sidecar:0.1.0"
NEW = "registry.example.com/llmgate-sidecar:0.2.0"


def pod(name: str, image: str | None, *, native: bool = True) -> dict[str, Any]:
    containers = [{"name": "app", "image": "app:1"}]
    sidecars = [{"name": SIDECAR_NAME, "image": image}] if image else []
    spec = ({"initContainers": sidecars, "containers": containers} if native
            else {"containers": containers + sidecars})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def test_image_versions() -> None:
    assert image_version(NEW) == "0.2.0"
    assert image_version("localhost:5000/llmgate-sidecar") == "latest"
    assert image_version("ghcr.io/x/s@sha256:0123456789abcdef0123") == "sha256:0123456789ab"
    assert sidecar_image(pod("a", OLD)) == OLD
    assert sidecar_image(pod("b", NEW, native=False)) == NEW
    assert sidecar_image(pod("c", None)) is None


def test_the_message_says_how_many_pods_are_behind() -> None:
    uniform, message = describe({"0.1.0": 3, "0.2.0": 5}, NEW)
    assert not uniform
    assert message == ("llmgate sidecars running: 0.1.0 (3 pods), 0.2.0 (5 pods); new pods get "
                       "0.2.0: 3 pod(s) still to roll (docs/upgrade.md)")
    assert describe({"0.2.0": 5}, NEW) == (
        True, "llmgate sidecars running: 0.2.0 (5 pods) (all at 0.2.0)")


async def _metric(settings: Any) -> dict[str, float]:
    url = f"http://127.0.0.1:{settings.ops_port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
    out = {}
    for line in text.splitlines():
        if line.startswith("llmgate_operator_sidecar_pods{"):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('"')[1]] = float(value)
    return out


def _annotation(k8s: Any) -> str | None:
    cm = h.stored(k8s, "v1/configmaps", NS, CONFIGMAP_NAME) or {}
    return ((cm.get("metadata") or {}).get("annotations") or {}).get(VERSIONS_ANNOTATION)


@pytest.mark.kmock(cls=Emu)
async def test_the_operator_reports_sidecar_versions_per_namespace(k8s: Any) -> None:
    async with h.running_operator(k8s, sidecar_image=NEW) as settings:
        await apply_all(k8s, quickstart())
        await h.eventually(lambda: h.bundle(k8s, NS), what="the namespace's config")
        for name, image in (("old-1", OLD), ("old-2", OLD), ("new-1", NEW), ("plain", None)):
            await h._send(k8s, "POST", f"/api/v1/namespaces/{NS}/pods", pod(name, image))
        await h.eventually(lambda: _annotation(k8s) == "0.1.0,0.2.0", what="the annotation")
        assert await h.eventually_async(
            lambda: _until(settings, {"0.1.0": 2.0, "0.2.0": 1.0}), what="the metric")
        event = await h.eventually(
            lambda: [e for e in _events(k8s) if e["reason"] == "SidecarVersions"],
            what="the SidecarVersions Event")
        assert event[-1]["type"] == "Warning"
        assert event[-1]["involvedObject"]["kind"] == "ConfigMap"
        assert "2 pod(s) still to roll" in event[-1]["message"]

        for name in ("old-1", "old-2"):            # the workload rolled
            await h.delete(k8s, f"/api/v1/namespaces/{NS}/pods/{name}")
        await h.eventually(lambda: _annotation(k8s) == "0.2.0", what="only the new version")
        assert await h.eventually_async(lambda: _until(settings, {"0.2.0": 1.0}),
                                        what="the old version gone from the metric")
        last = [e for e in _events(k8s) if e["reason"] == "SidecarVersions"][-1]
        assert last["type"] == "Normal" and "(all at 0.2.0)" in last["message"]


async def _until(settings: Any, expected: dict[str, float]) -> bool:
    return await _metric(settings) == expected
