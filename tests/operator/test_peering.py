"""More than one operator replica: kopf peering keeps one of them active.

Real kopf against the emulator with kopf's ClusterKopfPeering resource declared (as the
chart's `crds/kopf-peering.yaml` does on a cluster) and the peering object the chart creates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kmock
import pytest

from tests.operator import harness as h
from tests.operator.emulator import ALL_VERBS, Emu
from tests.operator.test_operator import NS, apply_all, quickstart, route_models

pytestmark = pytest.mark.kmock(cls=Emu)
PEERINGS = "kopf.dev/v1/clusterkopfpeerings"


async def test_operator_with_peering_reconciles_and_keeps_its_peering_alive(k8s: Any) -> None:
    k8s.resources[PEERINGS] = kmock.ResourceInfo(
        kind="ClusterKopfPeering", singular="clusterkopfpeering", namespaced=False,
        verbs=ALL_VERBS, subresources={"status"})
    async with k8s.post("/apis/kopf.dev/v1/clusterkopfpeerings",
                        json={"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
                              "metadata": {"name": "llmgate"}}) as response:
        assert response.status in (200, 201)
    async with h.running_operator(k8s, peering="llmgate"):
        await apply_all(k8s, quickstart())
        await h.eventually(lambda: route_models(k8s, NS) == {"gpt-4o-mini"},
                           what="the quickstart served under peering")

        def peers() -> Any:
            obj = k8s.objects[(k8s.resource(PEERINGS), None, "llmgate")]
            status = (obj.get("status") or {}) if obj is not None else {}
            # kopf writes one entry per live replica: {identity: {priority, lastseen, ...}}
            return [peer for peer in status.values()
                    if isinstance(peer, Mapping) and "lastseen" in peer]

        await h.eventually(peers, what="this replica's keep-alive in the peering object")
