"""Fixtures shared by every test directory: free loopback ports and a quick CR builder."""

from __future__ import annotations

import socket

import pytest


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def port_factory():  # type: ignore[no-untyped-def]
    return free_port
