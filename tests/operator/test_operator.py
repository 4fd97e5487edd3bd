"""The real operator (kopf + reconciler + ops port) against the emulated API server.

Each test applies CRs and Secrets over HTTP, as kubectl would, and checks what a user sees:
the namespace's ConfigMap/Secret (loaded the way the sidecar loads them), key Secrets,
status conditions and Events.
"""

from __future__ import annotations

import functools
import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from llmgate_contract import CONFIGMAP_NAME, CREDENTIALS_SECRET_NAME, bundle_files
from llmgate_operator import api
from llmgate_operator.compile import compile_namespace

from tests.operator import harness as h
from tests.operator.emulator import Emu

pytestmark = pytest.mark.kmock(cls=Emu)

NS = "team-a"
QUICKSTART = Path(__file__).parents[2] / "examples" / "quickstart.yaml"


def quickstart() -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(QUICKSTART.read_text()) if d]
    return [h.secret_body(d["metadata"]["name"], d["stringData"]) if d["kind"] == "Secret"
            else d for d in docs]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def apply_all(k8s: Any, docs: list[dict[str, Any]], namespace: str = NS) -> None:
    """Create `docs`, Secrets first (as Helm orders them): a VirtualKey created before its
    brought-in Secret would get a generated key instead."""
    for doc in sorted(docs, key=lambda d: d["kind"] != "Secret"):
        await h.create(k8s, namespace, doc)


def route_models(k8s: Any, namespace: str = NS) -> set[str] | None:
    b = h.bundle(k8s, namespace)
    return None if b is None else {r.model for r in b.config.routes}


def key_hashes(k8s: Any, vk: str, namespace: str = NS) -> list[str] | None:
    b = h.bundle(k8s, namespace)
    key = next((k for k in b.config.virtual_keys if k.name == vk), None) if b else None
    return None if key is None else [x.sha256 for x in key.hashes]


async def reconciles(settings: Any) -> float:
    """Successful reconciles so far, from the operator's own /metrics."""
    url = f"http://127.0.0.1:{settings.ops_port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith('llmgate_operator_reconciles_total{result="success"}'):
            return float(line.split()[-1])
    raise AssertionError("reconcile counter missing from /metrics")


async def converged_quickstart(k8s: Any) -> tuple[Any, Any, Any]:
    """Wait until the ConfigMap and Secret equal the compile of the applied quickstart and
    every CR reports its final status; returns (compilation, ConfigMap, Secret)."""
    crs = [h.must(k8s, f"llmgate.io/v1alpha1/{api.PLURALS[d['kind']]}", NS,
                  d["metadata"]["name"]) for d in quickstart() if d["kind"] != "Secret"]
    secrets = {"demo-llmgate-key": {"api-key": "lg-quickstart-demo-key"}}
    expected = compile_namespace(NS, crs, secrets, now=datetime.now(UTC))
    want_cm, want_secret = bundle_files(expected.config, expected.credentials)
    # Level-based: whatever order the CRs were seen in, the config converges to this.
    cm = await h.eventually(
        lambda: (c := h.stored(k8s, "v1/configmaps", NS, CONFIGMAP_NAME))
        and c["data"] == want_cm and c, what="the ConfigMap equal to the compile")
    secret = await h.eventually(
        lambda: (c := h.stored(k8s, "v1/secrets", NS, CREDENTIALS_SECRET_NAME))
        and h.decoded(c) == want_secret and c, what="the Secret equal to the compile")

    def all_ready() -> bool:
        return all((h.ready(k8s, b["kind"], NS, b["metadata"]["name"]) or {}).get("status")
                   == "True" for b in crs)

    await h.eventually(all_ready, what="every quickstart CR Ready=True")
    return expected, cm, secret


async def test_quickstart_compiles_into_what_the_sidecar_loads(k8s: Any) -> None:
    async with h.running_operator(k8s):
        await apply_all(k8s, quickstart())
        expected, cm, secret = await converged_quickstart(k8s)
        assert cm["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "llmgate"
        generation = expected.config.generation
        assert cm["metadata"]["annotations"]["llmgate.io/generation"] == generation
        assert secret["metadata"]["annotations"]["llmgate.io/generation"] == generation

        loaded = h.bundle(k8s, NS)
        assert loaded is not None and loaded.generation == generation
        assert {r.model for r in loaded.config.routes} == {"gpt-4o-mini"}
        # The brought-in key is used as is, and its Secret is left untouched.
        assert key_hashes(k8s, "demo") == [sha("lg-quickstart-demo-key")]
        demo = h.stored(k8s, "v1/secrets", NS, "demo-llmgate-key")
        assert demo is not None and h.decoded(demo) == {"api-key": "lg-quickstart-demo-key"}
        assert "ownerReferences" not in demo["metadata"]
        for kind, name in [("ProviderSecret", "mock"), ("LLMRoute", "gpt-4o-mini"),
                           ("VirtualKey", "demo")]:
            condition = await h.eventually(functools.partial(h.ready, k8s, kind, NS, name),
                                           what=f"{kind} {name} condition")
            assert condition["status"] == "True", condition
            assert condition["observedGeneration"] == 1


async def test_route_update_and_delete_reach_the_config(k8s: Any) -> None:
    async with h.running_operator(k8s):
        await apply_all(k8s, quickstart())
        await apply_all(k8s, [{
            "apiVersion": "llmgate.io/v1alpha1", "kind": "LLMRoute",
            "metadata": {"name": "claude"},
            "spec": {"targets": [{"provider": "mock", "model": "mock-2"}]}}])
        await h.eventually(lambda: route_models(k8s) == {"gpt-4o-mini", "claude"},
                           what="both routes served")

        await h.patch(k8s, h.cr_path("LLMRoute", NS, "claude"),
                      {"spec": {"aliases": ["sonnet"]}})
        def aliased() -> bool:
            loaded = h.bundle(k8s, NS)
            return loaded is not None and any(r.aliases == ["sonnet"]
                                              for r in loaded.config.routes)

        await h.eventually(aliased, what="the new alias in the config")

        await h.delete(k8s, h.cr_path("LLMRoute", NS, "claude"))
        await h.eventually(lambda: route_models(k8s) == {"gpt-4o-mini"},
                           what="the deleted route gone from the config")

        for doc in quickstart():
            if doc["kind"] != "Secret":
                await h.delete(k8s, h.cr_path(doc["kind"], NS, doc["metadata"]["name"]))
        emptied = await h.eventually(
            lambda: (b := h.bundle(k8s, NS)) and not b.config.routes
            and not b.config.providers and not b.config.virtual_keys and b,
            what="an empty config once no CR is left")
        assert emptied.config.namespace == NS


async def test_virtual_key_gets_a_generated_owned_secret(k8s: Any) -> None:
    async with h.running_operator(k8s):
        await apply_all(k8s, [{"apiVersion": "llmgate.io/v1alpha1", "kind": "VirtualKey",
                               "metadata": {"name": "ci"}, "spec": {"models": ["x"]}}])
        secret = await h.eventually(
            lambda: h.stored(k8s, "v1/secrets", NS, "ci-llmgate-key"), what="key Secret")
        key = h.decoded(secret)["api-key"]
        assert key.startswith("lg-") and len(key) > 40
        vk = h.cr(k8s, "VirtualKey", NS, "ci")
        assert vk is not None
        owner = secret["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["uid"]) == ("VirtualKey", "ci",
                                                                 vk["metadata"]["uid"])
        assert await h.eventually(lambda: key_hashes(k8s, "ci"), what="hash") == [sha(key)]
        status = await h.eventually(
            lambda: (h.cr(k8s, "VirtualKey", NS, "ci") or {}).get("status", {}).get("keyPrefix"),
            what="key prefix in status")
        assert status == key[:7]
        # The plaintext key never reaches the compiled config.
        assert key not in h.must(k8s, "v1/configmaps", NS, CONFIGMAP_NAME)["data"]["config.json"]

        # Deleting the key Secret revokes the key: a new one is issued in its place.
        await h.delete(k8s, f"/api/v1/namespaces/{NS}/secrets/ci-llmgate-key")
        fresh = await h.eventually(
            lambda: (x := h.stored(k8s, "v1/secrets", NS, "ci-llmgate-key"))
            and h.decoded(x)["api-key"] != key and h.decoded(x)["api-key"], what="a new key")
        assert await h.eventually(lambda: key_hashes(k8s, "ci") == [sha(fresh)],
                                  what="only the new key valid")


async def test_rotation_keeps_the_old_key_for_the_grace_period(k8s: Any) -> None:
    async with h.running_operator(k8s, resync_seconds=0.3):
        await apply_all(k8s, [{"apiVersion": "llmgate.io/v1alpha1", "kind": "VirtualKey",
                               "metadata": {"name": "svc"}, "spec": {}}])
        first = await h.eventually(lambda: key_hashes(k8s, "svc"), what="first key")
        old_key = h.decoded(h.must(k8s, "v1/secrets", NS, "svc-llmgate-key"))["api-key"]
        assert first == [sha(old_key)]

        await h.patch(k8s, h.cr_path("VirtualKey", NS, "svc"), {"metadata": {"annotations": {
            "llmgate.io/rotate": "2026-01", "llmgate.io/rotation-grace": "2s"}}})
        both = await h.eventually(lambda: (x := key_hashes(k8s, "svc")) and len(x) == 2 and x,
                                  what="new and old key both valid")
        data = h.decoded(h.must(k8s, "v1/secrets", NS, "svc-llmgate-key"))
        new_key = data["api-key"]
        assert new_key != old_key and new_key.startswith("lg-")
        assert both == [sha(new_key), sha(old_key)]
        assert data["previous-sha256"] == sha(old_key)

        # After the grace period the periodic resync drops the old key; the new one stays.
        assert await h.eventually(lambda: (x := key_hashes(k8s, "svc")) and len(x) == 1 and x,
                                  what="old key dropped after grace") == [sha(new_key)]
        # The same rotate value does not rotate again.
        assert h.decoded(h.must(k8s, "v1/secrets", NS, "svc-llmgate-key"))["api-key"] == new_key


async def test_missing_provider_secret_then_created(k8s: Any) -> None:
    provider = {"apiVersion": "llmgate.io/v1alpha1", "kind": "ProviderSecret",
                "metadata": {"name": "openai"},
                "spec": {"provider": "openai",
                         "apiKey": {"secretKeyRef": {"name": "openai-creds", "key": "key"}}}}
    route = {"apiVersion": "llmgate.io/v1alpha1", "kind": "LLMRoute",
             "metadata": {"name": "gpt-4o"},
             "spec": {"targets": [{"provider": "openai", "model": "gpt-4o"}]}}
    async with h.running_operator(k8s):
        await apply_all(k8s, [provider, route])
        not_found = await h.eventually(
            lambda: (c := h.ready(k8s, "ProviderSecret", NS, "openai")) and c["status"] == "False"
            and c, what="ProviderSecret not ready")
        assert not_found["reason"] == "SecretNotFound"
        assert "openai-creds" in not_found["message"]
        route_cond = await h.eventually(lambda: h.ready(k8s, "LLMRoute", NS, "gpt-4o"),
                                        what="route condition")
        assert route_cond["reason"] == "NoResolvedTargets"
        events = await h.eventually(
            lambda: [e for e in _events(k8s) if e["reason"] == "SecretNotFound"],
            what="an Event saying the Secret is missing")
        assert events[0]["type"] == "Warning"
        assert events[0]["involvedObject"]["name"] == "openai"

        await h.create(k8s, NS, h.secret_body("openai-creds", {"key": "sk-test-123"}))
        ready = await h.eventually(
            lambda: (c := h.ready(k8s, "ProviderSecret", NS, "openai")) and c["status"] == "True"
            and c, what="ProviderSecret ready once the Secret exists")
        assert ready["reason"] == "Resolved"
        loaded = await h.eventually(lambda: (b := h.bundle(k8s, NS)) and b.config.routes and b,
                                    what="the route served")
        assert loaded.credentials["openai.api-key"] == "sk-test-123"
        # The credential is in the Secret only, never in the ConfigMap.
        cm = h.stored(k8s, "v1/configmaps", NS, CONFIGMAP_NAME)
        assert "sk-test-123" not in str(cm)


async def test_invalid_spec_is_reported_and_the_rest_still_served(k8s: Any) -> None:
    bad = {"apiVersion": "llmgate.io/v1alpha1", "kind": "LLMRoute",
           "metadata": {"name": "broken"},
           "spec": {"strategy": "round-robin", "targets": [{"provider": "mock"}]}}
    async with h.running_operator(k8s):
        await apply_all(k8s, [*quickstart(), bad])
        condition = await h.eventually(lambda: h.ready(k8s, "LLMRoute", NS, "broken"),
                                       what="invalid route condition")
        assert condition["status"] == "False"
        assert condition["reason"] == "InvalidSpec"
        assert "strategy" in condition["message"]
        assert await h.eventually(lambda: route_models(k8s), what="config") == {"gpt-4o-mini"}
        # kopf marks this spec as handled (failed for good): no retry loop until it is edited.
        handled = await h.eventually(
            lambda: ((h.cr(k8s, "LLMRoute", NS, "broken") or {})["metadata"].get("annotations")
                     or {}).get("llmgate.io/last-handled-configuration"),
            what="kopf's record of the handled spec")
        assert "round-robin" in handled


async def test_nothing_is_rewritten_when_nothing_changed(k8s: Any) -> None:
    async with h.running_operator(k8s) as settings:
        await apply_all(k8s, quickstart())
        await converged_quickstart(k8s)  # the final config and statuses, not a first draft
        names = [("v1/configmaps", CONFIGMAP_NAME), ("v1/secrets", CREDENTIALS_SECRET_NAME)]
        crs = [(d["kind"], d["metadata"]["name"]) for d in quickstart() if d["kind"] != "Secret"]

        def versions() -> list[str]:
            objs = [h.stored(k8s, r, NS, n) for r, n in names]
            return [o["metadata"]["resourceVersion"] for o in objs if o]

        def statuses() -> list[Any]:
            return [(h.cr(k8s, k, NS, n) or {}).get("status") for k, n in crs]

        before, status_before = versions(), statuses()
        count = await reconciles(settings)
        # Touch a referenced Secret without changing its data: a full reconcile runs.
        await h.patch(k8s, f"/api/v1/namespaces/{NS}/secrets/demo-llmgate-key",
                      {"metadata": {"labels": {"touched": "yes"}}})
        await _until_more_reconciles(settings, count)
        assert versions() == before
        assert statuses() == status_before


async def _until_more_reconciles(settings: Any, count: float) -> None:
    async def more() -> bool:
        return await reconciles(settings) > count
    await h.eventually_async(more, what="another reconcile")


def _events(k8s: Any) -> list[dict[str, Any]]:
    resource = k8s.resource("v1/events")
    return [dict(obj.raw) for (res, _, _), obj in k8s.objects.items()
            if res == resource and not obj.deleted]


async def test_namespaced_operator_ignores_other_namespaces(k8s: Any) -> None:
    async with h.running_operator(k8s, namespaces=(NS,)):
        await apply_all(k8s, quickstart(), namespace="elsewhere")
        await apply_all(k8s, quickstart(), namespace=NS)
        await h.eventually(lambda: key_hashes(k8s, "demo"), what="watched namespace served")
        assert h.bundle(k8s, "elsewhere") is None


async def metrics_text(settings: Any) -> str:
    url = f"http://127.0.0.1:{settings.ops_port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        return await response.text()


async def test_ops_endpoints(k8s: Any) -> None:
    async with h.running_operator(k8s) as settings:
        base = f"http://127.0.0.1:{settings.ops_port}"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/healthz") as response:
                assert response.status == 200
            async with session.get(f"{base}/readyz") as response:
                assert response.status == 200
        await apply_all(k8s, quickstart())

        async def counted() -> str | None:
            text = await metrics_text(settings)
            return text if 'llmgate_operator_managed_objects{kind="VirtualKey"} 1.0' in text \
                else None

        text = await h.eventually_async(counted, what="the VirtualKey counted in /metrics")
        assert 'llmgate_operator_managed_objects{kind="LLMRoute"} 1.0' in text
        assert "llmgate_operator_reconcile_duration_seconds_count" in text
        compiles = [line for line in text.splitlines()
                    if line.startswith("llmgate_operator_compile_duration_seconds_count")]
        assert compiles and float(compiles[0].split()[-1]) >= 1
        assert await reconciles(settings) >= 1


async def test_config_left_behind_by_crs_deleted_while_down_is_emptied(k8s: Any) -> None:
    # A namespace served earlier, whose CRs were all deleted while no operator ran.
    async with h.running_operator(k8s):
        await apply_all(k8s, quickstart(), namespace="old")
        await h.eventually(lambda: key_hashes(k8s, "demo", "old"), what="config served")
    for doc in quickstart():
        if doc["kind"] != "Secret":
            await h.delete(k8s, h.cr_path(doc["kind"], "old", doc["metadata"]["name"]))
    assert route_models(k8s, "old") == {"gpt-4o-mini"}  # stale, nobody was watching

    async with h.running_operator(k8s, resync_seconds=0.3):
        emptied = await h.eventually(
            lambda: (b := h.bundle(k8s, "old")) and not b.config.routes and b,
            what="the orphaned config emptied")
        assert not emptied.config.providers and not emptied.config.virtual_keys
