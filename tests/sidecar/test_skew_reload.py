"""The running sidecar against configs from a newer operator (docs/upgrade.md, skew policy):
a schema version it does not read is refused loudly (/readyz, metrics, log) while the last
good config keeps serving; optional fields it does not know are left out and counted; a new
pod that finds only a config it cannot read is not ready, and says why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
from llmgate_contract import SCHEMA_VERSION
from llmgate_contract.config import content_hash
from llmgate_contract.versions import canonical
from llmgate_sidecar.api.state import CONFIG
from llmgate_sidecar.config.source import ConfigSource
from llmgate_sidecar.upstream.transport import Transports

from tests.sidecar.harness import start_gateway, write_files
from tests.sidecar.test_reload import BASE, ask, readyz


def rewrite(root: Path, change: dict[str, Any], *, extra: dict[str, Any] | None = None) -> str:
    """Rewrite the mounted config as a newer operator would write it; both volumes agree."""
    doc = json.loads((root / "config" / "config.json").read_text()) | change
    for key, value in (extra or {}).items():
        doc["providers"]["mock"][key] = value
    text = canonical(doc)
    generation = content_hash(text)
    secrets = {p.name: p.read_text() for p in (root / "credentials").iterdir()
               if not p.name.startswith(".")}
    write_files(root / "credentials", secrets | {"generation": generation})
    write_files(root / "config", {"config.json": text, "generation": generation})
    return generation


async def metrics(ops_url: str) -> str:
    async with aiohttp.ClientSession() as s, s.get(ops_url + "/metrics") as r:
        return await r.text()


async def test_a_newer_schema_is_refused_loudly_and_the_last_good_config_serves(
        tmp_path: Path) -> None:
    gw = await start_gateway(tmp_path, BASE)
    try:
        status, body = await readyz(gw.ops_url)
        good = body["generation"]
        assert status == 200 and body["schemaVersion"] == 1
        rewrite(tmp_path, {"schemaVersion": SCHEMA_VERSION + 1})
        assert gw.app[CONFIG].load() is False
        status, body = await readyz(gw.ops_url)
        assert status == 200 and body["generation"] == good      # still serving
        assert body["refusedSchemaVersion"] == SCHEMA_VERSION + 1
        assert body["readsSchemaVersions"] == [1, SCHEMA_VERSION]
        assert "upgrade the sidecar image" in body["lastError"]
        assert await ask(gw.base_url) == "first"
        text = await metrics(gw.ops_url)
        assert "llmgate_config_refused 1.0" in text
        assert 'llmgate_config_reloads_total{result="refused"} 1.0' in text

        # The next config it can read clears the refusal; unknown optional fields of a
        # newer release are left out and counted.
        generation = rewrite(tmp_path, {"schemaVersion": 2, "operatorVersion": "9.9.9"},
                             extra={"connectTimeout": 3})
        assert gw.app[CONFIG].load() is True
        status, body = await readyz(gw.ops_url)
        assert status == 200 and body["generation"] == generation
        assert body["schemaVersion"] == 2 and "refusedSchemaVersion" not in body
        assert body["ignoredFields"] == ["operatorVersion", "providers.mock.connectTimeout"]
        text = await metrics(gw.ops_url)
        assert "llmgate_config_refused 0.0" in text
        assert "llmgate_config_ignored_fields 2.0" in text
        assert "llmgate_config_schema_version 2.0" in text
        assert await ask(gw.base_url) == "first"
    finally:
        await gw.close()


async def test_a_new_pod_with_only_an_unreadable_config_is_not_ready(tmp_path: Path) -> None:
    gw = await start_gateway(tmp_path, BASE)
    await gw.close()
    rewrite(tmp_path, {"schemaVersion": SCHEMA_VERSION + 1})
    reloads: list[tuple[Any, ...]] = []
    transports = Transports()
    try:
        source = ConfigSource(tmp_path / "config", tmp_path / "credentials", transports,
                              on_reload=lambda *report: reloads.append(report))
        assert source.load() is False
        assert source.current is None                  # /readyz: 503, ready false
        assert source.refused_schema == SCHEMA_VERSION + 1
        assert source.last_error is not None and "upgrade the sidecar image" in source.last_error
        assert reloads == [("refused", None, None, 0)]
    finally:
        await transports.close()
