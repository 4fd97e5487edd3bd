"""The chart on the real control plane: a Helm release, and its operator Pods run locally.

`Release.install` installs charts/llmgate with the Helm SDK (helm-python-sdk) as an admin
would, with the values a loopback-only cluster needs (free ports; the webhook reached by
URL, since a Service cannot route to a process here). `Operators` waits for the Pods the
controller manager creates from the chart's Deployment and runs each with `PodRunner`:
the chart's own args and env, as the chart's ServiceAccount.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

from tests.cluster.api import eventually
from tests.cluster.binaries import ROOT
from tests.cluster.control_plane import ControlPlane
from tests.cluster.pods import PodRunner
from tests.conftest import free_port

CHART = ROOT / "charts" / "llmgate"
NAME = "llmgate"
NAMESPACE = "llmgate-system"
RESYNC_SECONDS = 5
OPERATOR_SELECTOR = (f"app.kubernetes.io/instance={NAME},"
                     "app.kubernetes.io/component=operator")


class Release:
    """One installed release; `helm` is the SDK configuration logged in as the admin."""

    def __init__(self, plane: ControlPlane, helm_config: helm.Config, values: dict[str, Any],
                 summary: dict[str, Any]) -> None:
        self.plane, self.helm, self.values, self.summary = plane, helm_config, values, summary
        self.webhook_port = int(values["webhook"]["port"])
        self.ops_port = int(values["ops"]["port"])

    @staticmethod
    def test_values(webhook_port: int, ops_port: int) -> dict[str, Any]:
        return {
            # Peering on (the peering test scales to two replicas); a short resync so that
            # test sees resync rounds too (a chart value: extraEnv).
            "operator": {"peering": {"enabled": True},
                         "extraEnv": [{"name": "LLMGATE_RESYNC_SECONDS",
                                       "value": str(RESYNC_SECONDS)}]},
            "webhook": {"port": webhook_port,
                        "url": f"https://127.0.0.1:{webhook_port}/mutate-pods"},
            "ops": {"port": ops_port},
        }

    @classmethod
    def install(cls, plane: ControlPlane, workdir: Path) -> Release:
        config = helm.Config(kubeconfig_path=plane.admin_kubeconfig(), namespace=NAMESPACE)
        values = cls.test_values(free_port(), free_port())
        summary = config.install(str(CHART), NAME, values, namespace=NAMESPACE,
                                 create_namespace=True, timeout=120)
        return cls(plane, config, values, summary)

    def manifests(self) -> list[dict[str, Any]]:
        """Every object of the release's manifest, as Helm stored it."""
        return self.parse(self.helm.status(NAME)["manifest"])

    @staticmethod
    def parse(manifest: str) -> list[dict[str, Any]]:
        return [doc for doc in yaml.safe_load_all(manifest) if doc]

    def close(self) -> None:
        self.helm.close()


class Operators:
    """The operator replicas, each the chart's Pod run locally (first: the chart's ports)."""

    def __init__(self, plane: ControlPlane, release: Release, workdir: Path) -> None:
        self.plane, self.release, self.workdir = plane, release, workdir
        self.running: dict[str, PodRunner] = {}
        self.resync_seconds = RESYNC_SECONDS
        self.ops_ports: dict[str, int] = {}

    def pods(self) -> list[dict[str, Any]]:
        return [pod for pod in self.plane.admin.items("Pod", NAMESPACE,
                                                       labelSelector=OPERATOR_SELECTOR)
                if not pod["metadata"].get("deletionTimestamp")]

    def start_all(self, replicas: int = 1) -> None:
        pods = eventually(lambda: (found := self.pods()) and len(found) >= replicas and found,
                          what=f"{replicas} operator pod(s) created by the controller manager")
        for pod in sorted(pods, key=lambda p: p["metadata"]["creationTimestamp"]):
            if pod["metadata"]["name"] not in self.running:
                self.start(pod)

    def start(self, pod: dict[str, Any]) -> PodRunner:
        """Run one operator Pod; replicas after the first get their own ports (no pod
        network here: every 'pod' shares loopback)."""
        name = pod["metadata"]["name"]
        extra: list[str] = []
        ops = self.release.ops_port
        if self.running:
            ops = free_port()
            extra = [f"--ops-port={ops}", f"--webhook-port={free_port()}"]
        runner = PodRunner(self.plane, pod, self.workdir, container="operator",
                           env_overrides={"LLMGATE_WEBHOOK_HOST": "127.0.0.1"},
                           extra_args=extra).start()
        self.running[name] = runner
        self.ops_ports[name] = ops
        eventually(lambda: runner.serving(ops), what=f"operator {name} /readyz",
                   timeout=60)
        return runner

    def stop(self, name: str, *, crash: bool = False) -> int | None:
        """SIGTERM by PID (as the kubelet stops a pod), or SIGKILL (`crash`)."""
        runner = self.running.pop(name)
        if crash and runner.process is not None:
            runner.process.kill()
        code = runner.stop()
        self.ops_ports.pop(name, None)
        return code

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)

    def logs(self, lines: int = 40) -> str:
        """The last `lines` of each running replica's log (0: all of it)."""
        return "\n".join(f"--- {name}\n{runner.tail(lines)}"
                         for name, runner in self.running.items())
