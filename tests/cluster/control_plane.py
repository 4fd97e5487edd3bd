"""Runs a real control plane on loopback: etcd, kube-apiserver and kube-controller-manager.

`ControlPlane(binaries, workdir).start()` generates the PKI, starts the three processes on
free 127.0.0.1 ports (data in `workdir`), waits until the API server's /readyz passes and
the controller manager has created the `default` ServiceAccount, and `stop()` ends them by
PID. Used by the session fixture in tests/cluster/conftest.py. There is no scheduler, no
kubelet and no container runtime: Pods are stored, never run (see `pods.py` for that).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import IO

from tests.cluster.api import Api, ApiError, kubeconfig
from tests.cluster.pki import Pki, make_pki
from tests.conftest import free_port

START_PATIENCE = 90.0  # seconds; a cold apiserver on two busy cores needs about 10
SERVICE_CIDR = "10.0.0.0/24"
ISSUER = "https://kubernetes.default.svc.cluster.local"
# The default admission chain plus the ones a hardened cluster adds; MutatingAdmissionWebhook
# is in the default set, named here so the intent is visible.
ADMISSION = ("NamespaceLifecycle,LimitRanger,ServiceAccount,PodSecurity,"
             "MutatingAdmissionWebhook,ValidatingAdmissionPolicy,ValidatingAdmissionWebhook,"
             "ResourceQuota,OwnerReferencesPermissionEnforcement,NodeRestriction")


START_ATTEMPTS = 3  # starts on fresh ports when a server found its port taken
PORT_TAKEN = "address already in use"  # what etcd and the Kubernetes servers log then


class PortTaken(RuntimeError):
    """A server exited because the port it was given had been taken meanwhile."""


class Process:
    """One server process, its log file, stopped by its PID."""

    def __init__(self, name: str, argv: list[str], log: Path, *,
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.name, self.argv, self.log = name, argv, log
        self._log: IO[bytes] = log.open("wb")
        self.popen = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True,
                                      env=env, cwd=cwd)

    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:] if lines else text)

    def check(self) -> None:
        if not self.alive():
            log = self.tail(0)
            kind = PortTaken if PORT_TAKEN in log else RuntimeError
            raise kind(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL by PID: a crash, no chance to clean up."""
        if self.alive():
            self.popen.kill()
            self.popen.wait(10)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM by PID, SIGKILL after `timeout`; the exit code."""
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        self._log.close()
        return self.popen.returncode


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager, for one test session."""

    def __init__(self, binaries: dict[str, Path], workdir: Path) -> None:
        self.binaries, self.workdir = binaries, workdir
        self.processes: list[Process] = []
        self.pki: Pki | None = None
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self._admin: Api | None = None

    # -- what tests use -----------------------------------------------------------------

    @property
    def admin(self) -> Api:
        assert self._admin is not None, "the control plane is not started"
        return self._admin

    @property
    def ca_file(self) -> Path:
        assert self.pki is not None
        return self.pki.ca_cert

    def admin_kubeconfig(self) -> Path:
        assert self.pki is not None
        file = self.workdir / "admin.kubeconfig"
        file.write_text(kubeconfig(self.server, self.pki.ca_cert,
                                   cert=(self.pki.admin_cert, self.pki.admin_key)))
        return file

    def as_token(self, token: str) -> Api:
        return Api(self.server, self.ca_file, token=token)

    def service_account_token(self, namespace: str, name: str, *, seconds: int = 3600,
                              bound_pod: dict[str, str] | None = None) -> str:
        """A token from the TokenRequest API, as the kubelet gets one for a pod."""
        spec: dict[str, object] = {"expirationSeconds": seconds}
        if bound_pod:
            spec["boundObjectRef"] = {"apiVersion": "v1", "kind": "Pod", **bound_pod}
        review = self.admin.request(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
        return str(review["status"]["token"])

    def check(self) -> None:
        """Raise (with the log's tail) if a server process has died."""
        for process in self.processes:
            process.check()

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> ControlPlane:
        """Start the three servers; when one of them finds its port taken (the ports are
        picked free, then bound by another process a moment later, and a loopback port can
        be taken meanwhile by any outgoing connection), start all three again on new ports,
        at most `START_ATTEMPTS` times. Any other failure is raised at once."""
        certs = self.workdir / "pki"
        certs.mkdir(parents=True, exist_ok=True)
        self.pki = make_pki(certs)
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                etcd = self._start_etcd(attempt)
                self._start_apiserver(etcd)
                self._start_controller_manager()
                return self
            except PortTaken:
                self.stop()
                self.processes, self._admin = [], None
                if attempt == START_ATTEMPTS:
                    raise
                self.port = free_port()
                self.server = f"https://127.0.0.1:{self.port}"
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.close()
        for process in reversed(self.processes):
            process.stop()

    def _spawn(self, name: str, argv: list[str]) -> Process:
        process = Process(name, argv, self.workdir / f"{name}.log")
        self.processes.append(process)
        return process

    def _wait(self, process: Process, probe: object, what: str) -> None:
        deadline = time.monotonic() + START_PATIENCE
        while time.monotonic() < deadline:
            process.check()
            with contextlib.suppress(Exception):
                if callable(probe) and probe():
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{what} not ready after {START_PATIENCE:.0f} s:\n{process.tail()}")

    def _start_etcd(self, attempt: int) -> str:
        client, peer = free_port(), free_port()
        client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        process = self._spawn("etcd", [
            str(self.binaries["etcd"]), "--name=default",
            f"--data-dir={self.workdir / f'etcd-{attempt}'}",
            f"--listen-client-urls={client_url}", f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}", "--unsafe-no-fsync",
            "--log-level=warn"])

        def healthy() -> bool:
            with urllib.request.urlopen(f"{client_url}/health", timeout=2) as response:
                return b'"health":"true"' in response.read()
        self._wait(process, healthy, "etcd")
        return client_url

    def _start_apiserver(self, etcd: str) -> None:
        pki = self.pki
        assert pki is not None
        process = self._spawn("kube-apiserver", [
            str(self.binaries["kube-apiserver"]),
            f"--etcd-servers={etcd}", "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
            f"--tls-cert-file={pki.server_cert}", f"--tls-private-key-file={pki.server_key}",
            f"--client-ca-file={pki.ca_cert}",
            f"--service-account-issuer={ISSUER}",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC", f"--enable-admission-plugins={ADMISSION}",
            "--allow-privileged=true", "--profiling=false", "--endpoint-reconciler-type=none",
            f"--cert-dir={self.workdir / 'apiserver-certs'}", "--v=1"])
        self._admin = Api(self.server, pki.ca_cert, cert=(pki.admin_cert, pki.admin_key))
        self._wait(process, lambda: self.admin.request("GET", "/readyz", accept="*/*") == "ok",
                   "kube-apiserver /readyz")

    def _start_controller_manager(self) -> None:
        pki = self.pki
        assert pki is not None
        config = self.workdir / "kcm.kubeconfig"
        config.write_text(kubeconfig(self.server, pki.ca_cert, cert=(
            pki.controller_manager_cert, pki.controller_manager_key)))
        process = self._spawn("kube-controller-manager", [
            str(self.binaries["kube-controller-manager"]),
            f"--kubeconfig={config}", f"--authentication-kubeconfig={config}",
            f"--authorization-kubeconfig={config}", "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}", "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki.service_account_key}",
            f"--root-ca-file={pki.ca_cert}", f"--cluster-signing-cert-file={pki.ca_cert}",
            f"--cluster-signing-key-file={pki.ca_key}",
            f"--cert-dir={self.workdir / 'kcm-certs'}",
            # Node and cloud controllers have nothing to do without nodes.
            "--controllers=*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-route,-service",
            "--concurrent-gc-syncs=5", "--v=1"])

        def default_account() -> bool:
            try:
                return self.admin.get("/api/v1/namespaces/default/serviceaccounts/default") \
                    is not None
            except ApiError:
                return False
        self._wait(process, default_account, "kube-controller-manager (default ServiceAccount)")

