"""A pod runner standing in for the kubelet (there is no container runtime here).

`PodRunner` takes a Pod as the API server stored it and runs one of its containers as a
local process, the way a kubelet would prepare it: ConfigMap and Secret volumes are written
with the kubelet's atomic layout (`..<timestamp>/` files, a `..data` symlink swapped in one
rename, per-key links) and kept in sync with the API; env comes from `value`, `fieldRef`,
`secretKeyRef` and `configMapKeyRef`; the service account's token is requested from the
TokenRequest API bound to the Pod and handed over as a kubeconfig. Images map to local
commands (`IMAGES`). What it cannot do: isolate networks (pods share loopback, so the
caller remaps ports), enforce resources or security contexts, or run probes.
"""

from __future__ import annotations

import base64
import os
import shutil
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.cluster.api import Api, kubeconfig
from tests.cluster.control_plane import ControlPlane, Process

VENV_BIN = Path(sys.executable).parent
# Image repository -> the image's ENTRYPOINT, as local argv (both images run `llmgate`).
IMAGES = {
    "ghcr.io/llmgate/llmgate-operator": [str(VENV_BIN / "llmgate")],
    "ghcr.io/llmgate/llmgate-sidecar": [str(VENV_BIN / "llmgate")],
}
SYNC_SECONDS = 0.2  # how often volumes are compared with the API (the kubelet: ~1 min)


def repository(image: str) -> str:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name.rsplit(":", 1)[0] if ":" in last else name


class AtomicDirectory:
    """A volume directory written the kubelet's way, so readers never see a torn update."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, bytes] | None = None
        self.swaps = 0

    def write(self, files: Mapping[str, bytes]) -> bool:
        """Publish `files` (no-op when unchanged); True if the directory changed."""
        if self.files == dict(files):
            return False
        stamp = self.root / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.time_ns()}"
        stamp.mkdir()
        for key, content in files.items():
            (stamp / key).write_bytes(content)
        link = self.root / "..data_tmp"
        link.unlink(missing_ok=True)
        link.symlink_to(stamp.name)
        old = (self.root / "..data").resolve() if (self.root / "..data").exists() else None
        os.replace(link, self.root / "..data")  # the one atomic step
        for key in files:
            if not (self.root / key).is_symlink():
                (self.root / key).symlink_to(f"..data/{key}")
        for key in set(self.files or ()) - set(files):
            (self.root / key).unlink(missing_ok=True)
        if old is not None and old != stamp:
            shutil.rmtree(old, ignore_errors=True)
        self.files = dict(files)
        self.swaps += 1
        return True


class PodRunner:
    """One container of one stored Pod, run locally until `stop()`."""

    def __init__(self, plane: ControlPlane, pod: Mapping[str, Any], workdir: Path, *,
                 container: str, env_overrides: Mapping[str, str] | None = None,
                 extra_args: list[str] | None = None) -> None:
        self.plane, self.pod = plane, dict(pod)
        self.namespace = pod["metadata"]["namespace"]
        self.name = pod["metadata"]["name"]
        self.workdir = workdir / self.name
        self.workdir.mkdir(parents=True, exist_ok=True)
        spec = pod["spec"]
        containers = list(spec.get("initContainers") or []) + list(spec["containers"])
        self.container = next(c for c in containers if c["name"] == container)
        self.env_overrides = dict(env_overrides or {})
        self.extra_args = list(extra_args or [])
        self.volumes: dict[str, AtomicDirectory] = {}
        self.mounts: dict[str, Path] = {}  # mountPath -> local directory
        self.process: Process | None = None
        self.log = self.workdir / f"{container}.log"
        self._stop = threading.Event()
        self._syncer: threading.Thread | None = None

    @property
    def admin(self) -> Api:
        return self.plane.admin

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    # -- volumes -------------------------------------------------------------------------

    def _volume_files(self, volume: Mapping[str, Any]) -> dict[str, bytes] | None:
        if "configMap" in volume:
            source, kind = volume["configMap"], "configmaps"
            name = source["name"]
        elif "secret" in volume:
            source, kind = volume["secret"], "secrets"
            name = source["secretName"]
        else:
            return None
        obj = self.admin.get(f"/api/v1/namespaces/{self.namespace}/{kind}/{name}")
        if obj is None:
            if not source.get("optional"):
                raise RuntimeError(f"{kind} {name} of pod {self.name} does not exist")
            return {}
        files = {k: v.encode() for k, v in (obj.get("data") or {}).items()} \
            if kind == "configmaps" else \
            {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        if kind == "configmaps":
            files |= {k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()}
        if source.get("items"):
            files = {item["path"]: files[item["key"]] for item in source["items"]
                     if item["key"] in files}
        return files

    def sync_volumes(self) -> None:
        for volume in self.pod["spec"].get("volumes") or []:
            files = self._volume_files(volume)
            if files is not None:
                self.volumes[volume["name"]].write(files)

    def _prepare_volumes(self) -> None:
        for volume in self.pod["spec"].get("volumes") or []:
            local = self.workdir / "volumes" / volume["name"]
            if "configMap" in volume or "secret" in volume:
                self.volumes[volume["name"]] = AtomicDirectory(local)
            else:  # emptyDir and anything else: an empty directory
                local.mkdir(parents=True, exist_ok=True)
        for mount in self.container.get("volumeMounts") or []:
            self.mounts[mount["mountPath"]] = self.workdir / "volumes" / mount["name"]
        self.sync_volumes()

    def _keep_volumes_synced(self) -> None:
        while not self._stop.wait(SYNC_SECONDS):
            try:
                self.sync_volumes()
            except Exception:  # the API may be briefly away; the next round retries
                continue

    def local_path(self, value: str) -> str:
        """A container path rewritten to where its volume lives on this machine."""
        for mount_path, local in sorted(self.mounts.items(), key=lambda kv: -len(kv[0])):
            if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
                return str(local) + value[len(mount_path.rstrip("/")):]
        return value

    # -- env and identity -------------------------------------------------------------------

    def _field(self, field_path: str) -> str:
        meta = self.pod["metadata"]
        values = {"metadata.name": meta["name"], "metadata.namespace": meta["namespace"],
                  "metadata.uid": meta["uid"], "status.podIP": "127.0.0.1",
                  "spec.serviceAccountName": self.pod["spec"].get("serviceAccountName", ""),
                  "spec.nodeName": "local"}
        return values[field_path]

    def _env_value(self, entry: Mapping[str, Any]) -> str | None:
        if "value" in entry:
            return str(entry["value"])
        source = entry.get("valueFrom") or {}
        if "fieldRef" in source:
            return self._field(source["fieldRef"]["fieldPath"])
        for key, kind in (("secretKeyRef", "secrets"), ("configMapKeyRef", "configmaps")):
            if key in source:
                ref = source[key]
                obj = self.admin.get(f"/api/v1/namespaces/{self.namespace}/{kind}/{ref['name']}")
                data = (obj or {}).get("data") or {}
                if ref["key"] not in data:
                    return None
                raw = data[ref["key"]]
                return base64.b64decode(raw).decode() if kind == "secrets" else str(raw)
        return None

    def environment(self) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(self.workdir),
               "PYTHONUNBUFFERED": "1", "NO_PROXY": "127.0.0.1,localhost"}
        for entry in self.container.get("env") or []:
            value = self._env_value(entry)
            if value is not None:
                env[entry["name"]] = self.local_path(value)
        account = self.pod["spec"].get("serviceAccountName")
        if account and self.pod["spec"].get("automountServiceAccountToken", True):
            token = self.plane.service_account_token(
                self.namespace, account,
                bound_pod={"name": self.name, "uid": self.pod["metadata"]["uid"]})
            config = self.workdir / "kubeconfig"
            config.write_text(kubeconfig(self.plane.server, self.plane.ca_file, token=token,
                                         namespace=self.namespace))
            env["KUBECONFIG"] = str(config)
        env.update(self.env_overrides)
        return env

    def argv(self) -> list[str]:
        image = self.container["image"]
        entrypoint = IMAGES.get(repository(image))
        if entrypoint is None:
            raise RuntimeError(f"no local command stands in for image {image}")
        command = list(self.container.get("command") or entrypoint)
        args = [self.local_path(arg) for arg in self.container.get("args") or []]
        return command + args + self.extra_args

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> PodRunner:
        self._prepare_volumes()
        self.process = Process(f"{self.name}/{self.container['name']}", self.argv(), self.log,
                               env=self.environment(), cwd=self.workdir)
        self._syncer = threading.Thread(target=self._keep_volumes_synced, daemon=True,
                                        name=f"volumes {self.name}")
        self._syncer.start()
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def tail(self, lines: int = 40) -> str:
        """The last `lines` of the container's log (0: all of it)."""
        return self.process.tail(lines) if self.process is not None else ""

    def serving(self, port: int, route: str = "/readyz") -> bool:
        """True once 127.0.0.1:`port``route` answers 200; raises if the process died."""
        if not self.alive():
            raise RuntimeError(f"{self.name}/{self.container['name']} exited:\n{self.tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{route}", timeout=2) as rsp:
                return bool(rsp.status == 200)
        except OSError:
            return False

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM by PID (SIGKILL after `timeout`); the exit code."""
        self._stop.set()
        if self._syncer is not None:
            self._syncer.join(5)
        return self.process.stop(timeout) if self.process is not None else None
