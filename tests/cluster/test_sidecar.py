"""Group 5: the injected sidecar, run from the stored Pod by the pod runner (the kubelet's
stand-in), serves the official openai SDK, and follows changes made through the API.

The Pod is the one the controller manager created and our webhook mutated; the runner
starts its sidecar container's command, args and env locally and keeps the ConfigMap and
Secret volumes in sync with `..data` symlink swaps, as the kubelet does. A route change
and a provider key rotation reach the same running process (no restart).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
from llmgate_contract import CONFIGMAP_NAME
from llmgate_operator.injection import SIDECAR_NAME
from llmgate_operator.rollout import VERSIONS_ANNOTATION, image_version

from tests.cluster.api import Api, eventually, path
from tests.cluster.control_plane import ControlPlane
from tests.cluster.pods import PodRunner
from tests.cluster.release import Operators
from tests.cluster.upstream import ThreadedUpstream
from tests.cluster.workloads import (
    deployment,
    example,
    namespace,
    pods_of,
    virtual_key,
    wait_ready,
)
from tests.conftest import free_port

NS = "served"


@dataclass
class Served:
    runner: PodRunner
    port: int
    key: str
    upstream: ThreadedUpstream

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key=self.key,
                             max_retries=0, timeout=20)


def _upstream_docs(url: str) -> list[dict[str, object]]:
    return [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "upstream-key"},
         "stringData": {"api-key": "sk-first"}},
        {"apiVersion": "llmgate.io/v1alpha1", "kind": "ProviderSecret",
         "metadata": {"name": "fake"},
         "spec": {"provider": "openai-compatible", "baseURL": url,
                  "apiKey": {"secretKeyRef": {"name": "upstream-key", "key": "api-key"}}}},
        {"apiVersion": "llmgate.io/v1alpha1", "kind": "LLMRoute",
         "metadata": {"name": "upstream-model"},
         "spec": {"targets": [{"provider": "fake", "model": "gpt-fake"}]}},
        {"apiVersion": "llmgate.io/v1alpha1", "kind": "VirtualKey", "metadata": {"name": "app"},
         "spec": {}},
    ]


def _run_sidecar(plane: ControlPlane, stored: dict[str, object],
                 workdir: Path) -> tuple[PodRunner, int]:
    """The stored Pod's sidecar as a local process on free ports; (runner, API port)."""
    port, ops = free_port(), free_port()
    runner = PodRunner(plane, stored, workdir, container=SIDECAR_NAME,
                       env_overrides={"LLMGATE_PORT": str(port), "LLMGATE_OPS_PORT": str(ops),
                                      "LLMGATE_OPS_HOST": "127.0.0.1"}).start()
    try:
        eventually(lambda: runner.serving(ops), what="the sidecar's /readyz")
    except BaseException:
        runner.stop()
        raise
    return runner, port


@pytest.fixture(scope="module")
def served(control_plane: ControlPlane, operators: Operators,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    admin = control_plane.admin
    upstream = ThreadedUpstream().start()
    ns = namespace(admin, NS)
    docs = example("quickstart.yaml") + _upstream_docs(upstream.url)
    admin.apply_all(docs, ns)
    wait_ready(admin, docs, ns)
    admin.apply(deployment("chat", {"llmgate.io/inject": "true"}), ns)
    [stored] = eventually(lambda: pods_of(admin, ns, "chat"), what="the injected Pod")
    runner, port = _run_sidecar(control_plane, stored, tmp_path_factory.mktemp("sidecar"))
    try:
        yield Served(runner, port, virtual_key(admin, ns, "app"), upstream)
    finally:
        runner.stop()
        upstream.close()


def test_the_runner_starts_the_pods_sidecar_as_stored(served: Served) -> None:
    container = served.runner.container
    assert served.runner.argv()[1:] == container["args"] == ["sidecar"]
    config_dir = Path(served.runner.environment()["LLMGATE_CONFIG_DIR"])
    data = config_dir / "..data"
    assert data.is_symlink() and (config_dir / "config.json").is_symlink()


def test_the_operator_reports_the_sidecar_version_running(admin: Api, served: Served) -> None:
    """Rollout visibility (docs/upgrade.md): the operator, watching pods under the chart's
    RBAC, annotates the namespace's llmgate-config with the sidecar versions running."""
    image = served.runner.container["image"]
    version = image_version(str(image))

    def annotated() -> str | None:
        cm = admin.must(path("ConfigMap", NS, CONFIGMAP_NAME))
        return (cm["metadata"].get("annotations") or {}).get(VERSIONS_ANNOTATION)

    assert eventually(annotated, what="llmgate.io/sidecar-versions") == version
    events = eventually(lambda: admin.items("Event", NS, fieldSelector="reason=SidecarVersions"),
                        what="the SidecarVersions Event")
    assert events[-1]["involvedObject"]["name"] == CONFIGMAP_NAME
    assert version in events[-1]["message"]


def test_openai_sdk_gets_a_completion(served: Served) -> None:
    raw = served.client().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert raw.headers["x-llmgate-provider"] == "mock"


def test_route_change_reaches_the_running_sidecar(admin: Api, served: Served) -> None:
    client = served.client()
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="hot-reloaded",
                                       messages=[{"role": "user", "content": "hi"}])
    pid = served.runner.pid
    admin.patch(path("LLMRoute", NS, "gpt-4o-mini"), {"spec": {"aliases": ["default",
                                                                            "hot-reloaded"]}})

    def served_alias() -> bool:
        try:
            client.chat.completions.create(model="hot-reloaded",
                                           messages=[{"role": "user", "content": "hi"}])
        except openai.NotFoundError:
            return False
        return True
    eventually(served_alias, what="the new alias served by the running sidecar", interval=0.5)
    assert served.runner.pid == pid and served.runner.alive()


def test_provider_key_rotation_reaches_it_without_restart(admin: Api, served: Served) -> None:
    client = served.client()
    pid = served.runner.pid
    client.chat.completions.create(model="upstream-model",
                                   messages=[{"role": "user", "content": "hi"}])
    assert served.upstream.authorizations()[-1] == "Bearer sk-first"
    admin.patch(path("Secret", NS, "upstream-key"), {"stringData": {"api-key": "sk-second"}})

    def rotated() -> bool:
        client.chat.completions.create(model="upstream-model",
                                       messages=[{"role": "user", "content": "hi"}])
        return served.upstream.authorizations()[-1] == "Bearer sk-second"
    eventually(rotated, what="the rotated key sent upstream", interval=0.5)
    assert served.runner.pid == pid and served.runner.alive()


def test_a_pod_bound_to_a_virtual_key_needs_no_key(control_plane: ControlPlane, served: Served,
                                                   tmp_path: Path) -> None:
    """`llmgate.io/virtual-key: demo` on the pod: the webhook gives the app a placeholder key
    and the sidecar the binding; the app's SDK then works with what the Pod spec says."""
    admin = control_plane.admin
    admin.apply(deployment("bound", {"llmgate.io/inject": "true"},
                           annotations={"llmgate.io/virtual-key": "demo"}), NS)
    [stored] = eventually(lambda: pods_of(admin, NS, "bound"), what="the bound Pod")
    [app] = stored["spec"]["containers"]
    app_env = {e["name"]: e.get("value") for e in app["env"]}
    runner, port = _run_sidecar(control_plane, stored, tmp_path)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1",
                               api_key=app_env["OPENAI_API_KEY"], max_retries=0, timeout=20)
        answer = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])
        assert answer.choices[0].message.content
        # The binding is the demo key's policy: it may use gpt-4o-mini only.
        with pytest.raises(openai.PermissionDeniedError):
            client.chat.completions.create(model="upstream-model",
                                           messages=[{"role": "user", "content": "hi"}])
    finally:
        runner.stop()
