"""Real redis-server processes on 127.0.0.1, started and stopped by PID: one server, a
3-master Redis Cluster, and a Sentinel set (master, replica, three Sentinels).

Used by the fixtures in tests/conftest.py and by the outage and failover tests, which stop a
server mid-run. Every wait is bounded; never skips: a missing binary fails.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import redis

INSTALL_HINT = "redis-server is required for the store tests: apt-get install -y redis-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process; `start()` again after `stop()` reuses the same port."""

    def __init__(self, workdir: Path, port: int | None = None,
                 extra_args: Sequence[str] = ()) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail(INSTALL_HINT)
        self.exe = exe
        self.workdir = workdir
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--daemonize", "no",
             "--loglevel", "warning", *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not self._pong():
            if self.proc.poll() is not None:
                pytest.fail(f"redis-server exited with {self.proc.returncode} on {self.port}")
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail("redis-server did not answer PING within 10 s")
            time.sleep(0.01)

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Kill by PID (SIGKILL: an outage, not a graceful shutdown) and reap."""
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait(timeout=5)
        self.proc = None


def _wait(condition: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout:.0f} s")
        time.sleep(0.05)


class RedisClusterSet:
    """A Redis Cluster of `masters` redis-servers, slots split evenly, joined by CLUSTER
    MEET, each with `replicas` replicas (CLUSTER REPLICATE); each node's bus port is a free
    port of its own (`--cluster-port`). `nodes` lists the masters first."""

    def __init__(self, workdir: Path, masters: int = 3, replicas: int = 0) -> None:
        self.masters = masters
        self.nodes = [RedisServer(_mkdir(workdir / f"node{i}"), extra_args=[
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-port", str(free_port()), "--cluster-node-timeout", "2000"])
            for i in range(masters * (1 + replicas))]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        step = 16384 // self.masters
        for i, node in enumerate(self.nodes[:self.masters]):
            last = 16383 if i == self.masters - 1 else (i + 1) * step - 1
            with self._client(node) as client:
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * step, last)
        with self._client(self.nodes[0]) as client:
            for node in self.nodes[1:]:
                bus = node.extra_args[node.extra_args.index("--cluster-port") + 1]
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, bus)
        _wait(self._ok, "the cluster did not reach cluster_state:ok", 20)
        for i, node in enumerate(self.nodes[self.masters:]):
            master = self.nodes[i % self.masters]
            with self._client(master) as client:
                master_id = client.execute_command("CLUSTER", "MYID")
            with self._client(node) as client:
                client.execute_command("CLUSTER", "REPLICATE", master_id)
        _wait(self._replicas_synced, "the replicas did not sync with their masters", 30)

    def _ok(self) -> bool:
        live = [n for n in self.nodes if n.proc is not None]
        for node in live:
            with self._client(node) as client:
                info = client.execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "cluster_state:ok" not in text or \
                    f"cluster_known_nodes:{len(self.nodes)}" not in text:
                return False
        return True

    def _replicas_synced(self) -> bool:
        for node in self.nodes[self.masters:]:
            with self._client(node) as client:
                if client.info("replication").get("master_link_status") != "up":
                    return False
        return True

    def owner(self, key: str) -> RedisServer:
        """The master node serving `key`'s slot now."""
        for node in self.nodes:
            if node.proc is None:
                continue
            with self._client(node) as client:
                if client.info("replication").get("role") != "master":
                    continue
                if self._serves(client, int(client.execute_command("CLUSTER", "KEYSLOT",
                                                                    key))):
                    return node
        raise AssertionError(f"no live master serves {key}")

    @staticmethod
    def _serves(client: redis.Redis, slot: int) -> bool:
        myself = client.execute_command("CLUSTER", "MYID")
        myself = myself.decode() if isinstance(myself, bytes) else str(myself)
        for first, last, *nodes in client.execute_command("CLUSTER", "SLOTS"):
            node_id = nodes[0][2]
            node_id = node_id.decode() if isinstance(node_id, bytes) else str(node_id)
            if first <= slot <= last and node_id == myself:
                return True
        return False

    def wait_failover(self, dead: RedisServer, key: str, timeout: float = 30) -> RedisServer:
        """Wait until a replica serves `key`'s slot in place of `dead`, the cluster is ok."""
        def promoted() -> bool:
            try:
                return self.owner(key) is not dead and self._ok()
            except (AssertionError, redis.RedisError, OSError):
                return False
        _wait(promoted, "no replica was promoted", timeout)
        return self.owner(key)

    @staticmethod
    def _client(node: RedisServer) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=2)

    def flush(self) -> None:
        for node in self.nodes:
            with self._client(node) as client:
                client.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class SentinelSet:
    """A master, one replica and three Sentinels (quorum 2) watching it as `service`.
    Failure detection is fast (500 ms down-after) so a failover takes a few seconds."""

    service = "llmgate"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.master = RedisServer(_mkdir(workdir / "master"))
        self.replica = RedisServer(_mkdir(workdir / "replica"))
        self.replica.extra_args = ["--replicaof", "127.0.0.1", str(self.master.port)]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.service}"

    def start(self) -> None:
        self.master.start()
        self.replica.start()
        _wait(self._replica_synced, "the replica did not sync with the master", 20)
        for i, port in enumerate(self.sentinel_ports):
            conf = _mkdir(self.workdir / f"sentinel{i}") / "sentinel.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {conf.parent}\n"
                f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {self.service} 500\n"
                f"sentinel failover-timeout {self.service} 4000\n")
            self.sentinels.append(subprocess.Popen(
                [self.master.exe, str(conf), "--sentinel", "--loglevel", "warning"],
                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        _wait(self._sentinels_agree, "the Sentinels did not find each other and the replica",
              30)

    def _sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2,
                           decode_responses=True)

    def _replica_synced(self) -> bool:
        with redis.Redis(host="127.0.0.1", port=self.replica.port, socket_timeout=2) as r:
            return bool(r.info("replication").get("master_link_status") == "up")

    def _sentinels_agree(self) -> bool:
        try:
            for port in self.sentinel_ports:
                with self._sentinel(port) as s:
                    fields = s.sentinel_master(self.service)
                    if int(fields["num-other-sentinels"]) < 2 or \
                            int(fields["num-slaves"]) < 1:
                        return False
        except (redis.RedisError, OSError):
            return False
        return True

    def master_port(self) -> int:
        """The master's port as the first Sentinel names it now."""
        with self._sentinel(self.sentinel_ports[0]) as s:
            _, port = s.sentinel_get_master_addr_by_name(self.service)
        return int(port)

    def kill_master(self) -> None:
        """SIGKILL the master (a crash); the Sentinels promote the replica."""
        self.master.stop()

    def wait_failover(self, timeout: float = 20) -> None:
        _wait(lambda: self.master_port() == self.replica.port,
              "the Sentinels did not promote the replica", timeout)
        with redis.Redis(host="127.0.0.1", port=self.replica.port, socket_timeout=2) as r:
            _wait(lambda: r.info("replication")["role"] == "master",
                  "the promoted replica did not become a master", timeout)

    def stop(self) -> None:
        for proc in self.sentinels:
            proc.kill()
            proc.wait(timeout=5)
        self.sentinels.clear()
        self.replica.stop()
        self.master.stop()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
