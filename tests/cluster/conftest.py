"""Cluster-stage fixtures: one real control plane per session, the chart installed into it
with Helm, and the operator running from the Pod the controller manager made of it.

Every test here is marked `cluster`. The binaries come from `make controlplane`; when they
are missing the tests fail (never skip) and say which command builds them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import binaries
from tests.cluster.api import Api
from tests.cluster.control_plane import ControlPlane
from tests.cluster.release import Operators, Release

LAST = "test_peering.py"  # it stops the session's first operator replica


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.cluster)
    items.sort(key=lambda item: Path(str(item.fspath)).name == LAST)  # stable: else unchanged


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver + kube-controller-manager on loopback, stopped by PID."""
    found = binaries.installed()
    if found is None:
        pytest.fail(f"the control-plane binaries are not built for the pinned versions "
                    f"({binaries.cache_dir()}): run `{binaries.BUILD_COMMAND}` "
                    "(`make test` runs it first)", pytrace=False)
    plane = ControlPlane(found, tmp_path_factory.mktemp("control-plane"))
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def admin(control_plane: ControlPlane) -> Api:
    return control_plane.admin


@pytest.fixture(scope="session")
def release(control_plane: ControlPlane,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    """charts/llmgate installed with Helm as release `llmgate` in `llmgate-system`."""
    installed = Release.install(control_plane, tmp_path_factory.mktemp("helm"))
    yield installed
    installed.close()


@pytest.fixture(scope="session")
def operators(control_plane: ControlPlane, release: Release,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operators]:
    """The operator Pod(s) of the release, run locally as the chart's ServiceAccount."""
    running = Operators(control_plane, release, tmp_path_factory.mktemp("operators"))
    try:
        running.start_all()
        yield running
    finally:
        running.stop_all()
