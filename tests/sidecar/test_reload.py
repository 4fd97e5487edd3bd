"""Hot reload: a new config is served at once; a torn or invalid one never replaces the last good.

Real files in the layout kubelet mounts, rewritten under a running app.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import openai
from llmgate_contract import bundle_files
from llmgate_operator.compile import compile_namespace
from llmgate_sidecar.api.state import CONFIG

from tests.fakes.openai_upstream import FakeOpenAI
from tests.sidecar.harness import KEY, provider, route, start_gateway, virtual_key

BASE = [provider("mock", "mock", mock={"reply": "first"}),
        route("m", [{"provider": "mock", "model": "x"}]),
        virtual_key("team", secretName="team-key")]


async def ask(base_url: str) -> str:
    async with openai.AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=0) as c:
        result = await c.chat.completions.create(model="m", messages=[
            {"role": "user", "content": "hi"}])
    return result.choices[0].message.content or ""


async def readyz(ops_url: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s, s.get(ops_url + "/readyz") as r:
        return r.status, await r.json()


async def test_new_config_is_served_after_reload(tmp_path: Path) -> None:
    gw = await start_gateway(tmp_path, BASE)
    try:
        assert await ask(gw.base_url) == "first"
        generation = gw.apply([provider("mock", "mock", mock={"reply": "second"}), *BASE[1:]],
                              {"team-key": {"api-key": KEY}})
        assert await ask(gw.base_url) == "second"
        status, body = await readyz(gw.ops_url)
        assert status == 200 and body["generation"] == generation
        async with aiohttp.ClientSession() as s, s.get(gw.ops_url + "/metrics") as r:
            text = await r.text()
        assert f'llmgate_config_info{{generation="{generation}"}} 1.0' in text
        assert 'llmgate_config_reloads_total{result="success"} 2.0' in text
    finally:
        await gw.close()


async def test_torn_config_keeps_the_last_good_one(tmp_path: Path) -> None:
    gw = await start_gateway(tmp_path, BASE)
    try:
        good = (await readyz(gw.ops_url))[1]["generation"]
        # The ConfigMap moved on but the Secret did not (yet): generations differ.
        (tmp_path / "credentials" / "generation").write_text("0000000000000000")
        assert gw.app[CONFIG].load() is False
        status, body = await readyz(gw.ops_url)
        assert status == 200 and body["generation"] == good
        assert "credentials are at generation" in body["lastError"]
        assert await ask(gw.base_url) == "first"
        # Garbage in config.json: still serving the last good config.
        (tmp_path / "config" / "config.json").write_text("{not json")
        assert gw.app[CONFIG].load() is False
        assert await ask(gw.base_url) == "first"
        assert "config.json is invalid" in (await readyz(gw.ops_url))[1]["lastError"]
    finally:
        await gw.close()


async def test_not_ready_and_503_until_a_config_exists(tmp_path: Path) -> None:
    gw = await start_gateway(tmp_path, BASE)
    try:
        gw.app[CONFIG].current = None
        status, body = await readyz(gw.ops_url)
        assert status == 503 and body["ready"] is False
        async with aiohttp.ClientSession() as s, s.post(
                gw.base_url + "/chat/completions", json={"model": "m", "messages": [
                    {"role": "user", "content": "x"}]},
                headers={"Authorization": f"Bearer {KEY}"}) as r:
            assert r.status == 503
            assert r.headers["Retry-After"] == "1"
            assert (await r.json())["error"]["code"] == "config_not_loaded"
    finally:
        await gw.close()


def kubelet_volume(directory: Path, files: dict[str, str], version: str) -> None:
    """Write `files` the way kubelet updates a ConfigMap/Secret volume: a new timestamped
    directory, then an atomic swap of the `..data` symlink the visible names point through."""
    directory.mkdir(parents=True, exist_ok=True)
    payload = directory / f"..{version}"
    payload.mkdir()
    for name, text in files.items():
        (payload / name).write_text(text)
    tmp = directory / "..data_tmp"
    tmp.symlink_to(payload.name)
    tmp.replace(directory / "..data")
    for name in files:
        link = directory / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")


async def test_kubelet_symlink_swaps_are_followed(tmp_path: Path) -> None:
    gw = await start_gateway(tmp_path / "plain", BASE)
    try:
        source = gw.app[CONFIG]
        source.config_dir, source.credentials_dir = tmp_path / "cm", tmp_path / "secret"
        for version, reply in (("2026_11_22_1", "from kubelet"), ("2026_11_22_2", "swapped")):
            result = compile_namespace(
                "default", [provider("mock", "mock", mock={"reply": reply}), *BASE[1:]],
                {"team-key": {"api-key": KEY}}, now=datetime.now(UTC))
            config_files, secret_files = bundle_files(result.config, result.credentials)
            kubelet_volume(tmp_path / "secret", secret_files, version)
            kubelet_volume(tmp_path / "cm", config_files, version)
            assert source.load() is True
            assert await ask(gw.base_url) == reply
    finally:
        await gw.close()


async def test_a_rotated_provider_key_is_used_without_a_restart(tmp_path: Path) -> None:
    upstream = await FakeOpenAI().start()
    crs = [provider("up", baseURL=upstream.url,
                    apiKey={"secretKeyRef": {"name": "up-key", "key": "token"}}),
           route("m", [{"provider": "up", "model": "x"}]),
           virtual_key("team", secretName="team-key")]
    gw = await start_gateway(tmp_path, crs, {"up-key": {"token": "sk-old-000000"}})
    try:
        await ask(gw.base_url)
        gw.apply(crs, {"team-key": {"api-key": KEY}, "up-key": {"token": "sk-new-111111"}})
        await ask(gw.base_url)
        assert [h["Authorization"] for h in upstream.headers] == [
            "Bearer sk-old-000000", "Bearer sk-new-111111"]
    finally:
        await gw.close()
        await upstream.close()


async def test_a_rotated_secret_header_is_sent_without_a_restart(tmp_path: Path) -> None:
    upstream = await FakeOpenAI().start()
    crs = [provider("up", baseURL=upstream.url, headers={"X-Team": "blue"},
                    apiKey={"secretKeyRef": {"name": "up-key", "key": "token"}},
                    secretHeaders={"X-Api-Key": {"secretKeyRef": {"name": "hdr", "key": "v"}}}),
           route("m", [{"provider": "up", "model": "x"}]),
           virtual_key("team", secretName="team-key")]
    secrets = {"up-key": {"token": "sk-000000"}, "team-key": {"api-key": KEY}}
    gw = await start_gateway(tmp_path, crs, {**secrets, "hdr": {"v": "hv-old-000"}})
    try:
        await ask(gw.base_url)
        gw.apply(crs, {**secrets, "hdr": {"v": "hv-new-111"}})
        await ask(gw.base_url)
        assert [(h["X-Api-Key"], h["X-Team"]) for h in upstream.headers] == [
            ("hv-old-000", "blue"), ("hv-new-111", "blue")]
        mounted = [p.read_text() for p in (tmp_path / "config").rglob("*") if p.is_file()]
        assert mounted and not any("hv-" in text for text in mounted)   # the ConfigMap
    finally:
        await gw.close()
        await upstream.close()
