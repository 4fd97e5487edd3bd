"""The operator neither asks for nor keeps Secrets it does not use: 5,000 unrelated Secrets
(4,000 in namespaces without llmgate CRs, 1,000 beside the CRs) leave its memory flat.

The operator runs as its own process (`python -m llmgate_operator.main`, kubeconfig pointing
at the emulator), so its resident memory is measured apart from the emulator's store. The
bound is loose on purpose (allocator noise); keeping every Secret decoded, as the operator
once did, costs several times that. The request log shows the mechanism: no Secret outside
the CRs' namespace is ever requested, and no Secret is listed or watched cluster-wide.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from llmgate_contract import CREDENTIALS_SECRET_NAME

from tests.conftest import free_port
from tests.operator import harness as h
from tests.operator.emulator import Emu

pytestmark = pytest.mark.kmock(cls=Emu)
NS = "apps"
UNRELATED_NAMESPACES = 20
PER_NAMESPACE = 200  # x 20 = 4,000 elsewhere, plus 1,000 beside the CRs
BESIDE = 1_000
GROWTH_BOUND_KIB = 8 * 1024


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emu",
        "clusters": [{"name": "emu", "cluster": {"server": server}}],
        "users": [{"name": "emu", "user": {"token": "test"}}],
        "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "emu"}}]}))
    return path


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def _ready(port: int, proc: asyncio.subprocess.Process) -> bool:
    assert proc.returncode is None, "the operator exited"
    try:
        async with aiohttp.ClientSession() as session, session.get(
                f"http://127.0.0.1:{port}/readyz") as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def operator_process(k8s: Any, tmp_path: Path) -> AsyncIterator[tuple[int, int]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LLMGATE_", "KUBERNETES_"))}
    env["KUBECONFIG"] = str(_kubeconfig(tmp_path / "kubeconfig", str(k8s.url).rstrip("/")))
    with (tmp_path / "operator.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "llmgate_operator.main", "--no-webhook", "--ops-host",
            "127.0.0.1", "--ops-port", str(port), "--resync-seconds", "600",
            "--log-level", "WARNING", env=env, stdout=log, stderr=log)
    try:
        await h.eventually_async(lambda: _ready(port, proc), what="operator process ready")
        yield proc.pid, port
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _settled_rss(pid: int) -> int:
    await asyncio.sleep(1.0)
    return rss_kib(pid)


def _filler(i: int) -> dict[str, str]:
    return {"token": f"{i:08d}" * 96, "ca.crt": "c" * 256}  # ~1 KiB each, like real ones


async def _create_unrelated(k8s: Any) -> None:
    jobs = [(f"other-{n}", f"unrelated-{n}-{i}") for n in range(UNRELATED_NAMESPACES)
            for i in range(PER_NAMESPACE)]
    jobs += [(NS, f"beside-{i}") for i in range(BESIDE)]
    for start in range(0, len(jobs), 50):
        await asyncio.gather(*(h.create(k8s, ns, h.secret_body(name, _filler(i)))
                               for i, (ns, name) in enumerate(jobs[start:start + 50])))


async def test_memory_is_flat_with_5000_unrelated_secrets(k8s: Any, tmp_path: Path) -> None:
    await h.create(k8s, NS, h.secret_body("openai-creds", {"key": "sk-first"}))
    await h.create(k8s, NS, {"apiVersion": "llmgate.io/v1alpha1", "kind": "ProviderSecret",
                             "metadata": {"name": "openai"},
                             "spec": {"provider": "openai", "apiKey": {"secretKeyRef": {
                                 "name": "openai-creds", "key": "key"}}}})

    def credentials() -> dict[str, str]:
        secret = h.stored(k8s, "v1/secrets", NS, CREDENTIALS_SECRET_NAME)
        return h.decoded(secret) if secret else {}

    running = operator_process(k8s, tmp_path)
    pid, _ = await running.__anext__()
    try:
        await h.eventually(lambda: "sk-first" in credentials().values(), what="served")
        before = await _settled_rss(pid)
        await _create_unrelated(k8s)
        # A change after the flood proves the operator is live and has seen all of it.
        await h.patch(k8s, f"/api/v1/namespaces/{NS}/secrets/openai-creds",
                      {"data": {"key": base64.b64encode(b"sk-second").decode()}})
        await h.eventually(lambda: "sk-second" in credentials().values(), what="rotated")
        after = await _settled_rss(pid)
    finally:
        await running.aclose()

    growth = after - before
    print(f"operator RSS {before} KiB -> {after} KiB (+{growth} KiB) "
          f"with {UNRELATED_NAMESPACES * PER_NAMESPACE + BESIDE} unrelated Secrets")
    assert growth < GROWTH_BOUND_KIB, (before, after)

    # The operator's requests (the test itself only POSTs Secrets).
    reads = [r for r in k8s.served if r.resource == "v1/secrets" and r.method != "POST"]
    assert reads
    elsewhere = {r.namespace for r in reads if r.namespace != NS}
    assert elsewhere == set(), "the operator asked for Secrets outside the CRs' namespace"
    named = {r.name for r in reads if r.name}
    assert not any(name.startswith("beside-") for name in named)


async def test_a_namespace_that_grants_nothing_says_so_and_recovers(k8s: Any) -> None:
    """403 on its Secrets (RBAC with no RoleBinding there): AccessDenied naming the role to
    bind, nothing written; once granted, the namespace is served."""
    k8s.locked.add("locked")
    async with h.running_operator(k8s, resync_seconds=0.5, namespace_role="gw-ns"):
        await h.create(k8s, "locked", {"apiVersion": "llmgate.io/v1alpha1",
                                       "kind": "VirtualKey", "metadata": {"name": "k"},
                                       "spec": {}})
        condition = await h.eventually(lambda: h.ready(k8s, "VirtualKey", "locked", "k"),
                                       what="a Ready condition")
        assert (condition["status"], condition["reason"]) == ("False", "AccessDenied")
        assert "'gw-ns'" in condition["message"] and "RoleBinding" in condition["message"]
        assert h.stored(k8s, "v1/secrets", "locked", "k-llmgate-key") is None

        k8s.locked.clear()
        await h.eventually(lambda: (h.ready(k8s, "VirtualKey", "locked", "k") or {})
                           .get("status") == "True", what="served once granted")
        assert h.stored(k8s, "v1/secrets", "locked", "k-llmgate-key") is not None
