"""The sidecar side of the golden files: every compiled config the operator produces
(tests/data/golden/*/config.json + credentials.json) loads into the sidecar's serving tables,
with every route reachable by its public names and every key findable by its hash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from llmgate_contract import bundle_files, parse_config, read_bundle
from llmgate_sidecar.config.runtime import Runtime
from llmgate_sidecar.upstream.transport import Transports

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "config.json").exists())


@pytest.mark.parametrize("case", CASES)
async def test_golden_config_loads_in_the_sidecar(case: str) -> None:
    config = parse_config((GOLDEN / case / "config.json").read_text())
    credentials = json.loads((GOLDEN / case / "credentials.json").read_text())
    config_files, secret_files = bundle_files(config, credentials)
    transports = Transports()
    try:
        runtime = Runtime.build(read_bundle(config_files, secret_files), transports)
    finally:
        await transports.close()
    assert runtime.generation == config.generation
    for route in config.routes:
        for name in (route.model, *route.aliases):
            assert runtime.routes_by_model[name].name == route.name
    for key in config.virtual_keys:
        for h in key.hashes:
            entry = runtime.find_key(h.sha256)
            assert entry is not None and entry.key.name == key.name
    assert set(runtime.upstreams) | set(runtime.unsupported) == set(config.providers)


def test_there_are_golden_cases() -> None:
    assert "quickstart" in CASES and len(CASES) >= 4
