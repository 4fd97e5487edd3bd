"""The test harness's own control plane: a start survives a port taken meanwhile.

The servers' ports are picked free and bound a moment later by other processes; on a busy
machine another process (or an outgoing connection's local port) can take one in between,
and then every cluster test of the session errored. `ControlPlane.start` starts all three
servers again on new ports when one logs that its address is in use.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.cluster import binaries
from tests.cluster.control_plane import ControlPlane


def test_a_taken_api_server_port_is_replaced_by_a_free_one(tmp_path: Path) -> None:
    found = binaries.installed()
    if found is None:
        pytest.fail(f"run `{binaries.BUILD_COMMAND}` first", pytrace=False)
    plane = ControlPlane(found, tmp_path)
    taken = plane.port
    with socket.socket() as squatter:  # holds the API server's port while it starts
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        plane.start()
        try:
            assert plane.port != taken
            assert plane.admin.request("GET", "/readyz", accept="*/*") == "ok"
            assert (tmp_path / "etcd-1").is_dir() and (tmp_path / "etcd-2").is_dir()
        finally:
            plane.stop()
    assert all(not process.alive() for process in plane.processes)
