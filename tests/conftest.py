"""Fixtures shared by every test directory: free loopback ports, a quick CR builder, and one
real redis-server per session (the sidecar's store tests and the operator's spend tests), and
a real 3-master Redis Cluster per session for the tests that run across topologies."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator

import pytest

from tests.sidecar.redis_server import RedisClusterSet, RedisServer


def pytest_report_header(config: pytest.Config) -> str:
    """The real API server the cluster stage runs against (its binary's own version)."""
    from tests.cluster import binaries

    found = binaries.installed()
    if found is None:
        return f"kube-apiserver: not built (run `{binaries.BUILD_COMMAND}`)"
    out = subprocess.run([str(found["kube-apiserver"]), "--version"], capture_output=True,
                         text=True, timeout=30).stdout.split()
    return f"kube-apiserver {out[-1] if out else '?'} (real)"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def port_factory():  # type: ignore[no-untyped-def]
    return free_port


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, stopped by PID at the end."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterSet]:
    """Three redis-server masters joined into one Redis Cluster, stopped by PID at the end."""
    cluster = RedisClusterSet(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
