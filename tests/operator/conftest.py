"""Operator test fixtures: `k8s`, the kmock emulator (`Emu`) with llmgate's CRDs declared."""

from __future__ import annotations

from typing import Any

import pytest

from tests.operator.emulator import declare
from tests.operator.harness import CRDS


@pytest.fixture
def k8s(kmock: Any) -> Any:
    """The emulated API server (use with `pytestmark = pytest.mark.kmock(cls=Emu)`)."""
    return declare(kmock, CRDS)
