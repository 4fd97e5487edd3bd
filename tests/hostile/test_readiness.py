"""/readyz tells the kubelet the truth: 503 from SIGTERM on while in-flight requests drain,
and 503 under failClosed while Redis is down (tried through `llmgate dev --fail-mode`)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import free_port
from tests.hostile.sidecar_process import AUTH, SidecarProcess, chat_body
from tests.sidecar.harness import provider, route, virtual_key
from tests.sidecar.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]


async def readyz(ops_url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        async with session.get(ops_url + "/readyz") as response:
            return response.status, await response.json()


async def wait_for_status(ops_url: str, status: int, seconds: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    last: tuple[int, dict[str, Any]] | None = None
    while time.monotonic() < deadline:
        try:
            last = await readyz(ops_url)
            if last[0] == status:
                return last[1]
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"/readyz never answered {status}; last: {last}")


async def test_readyz_is_503_while_draining_after_sigterm(tmp_path: Path) -> None:
    words = " ".join(f"w{i}" for i in range(40))
    sidecar = SidecarProcess(tmp_path, [
        provider("mock", "mock", mock={"reply": words, "chunkDelayMs": 100}),
        route("slow", [{"provider": "mock", "model": "m"}]),
        virtual_key("team", secretName="team-key")])
    try:
        await sidecar.ready()
        async with aiohttp.ClientSession() as session:
            async with session.post(sidecar.url + "/v1/chat/completions", headers=AUTH,
                                    json=chat_body("slow", stream=True)) as response:
                await response.content.readuntil(b"\n\n")  # the stream is in flight
                sidecar.proc.terminate()
                body = await wait_for_status(sidecar.ops_url, 503, seconds=3)
                assert body["draining"] is True and body["ready"] is False
                assert b"[DONE]" in await response.read()  # and it still drains whole
        # Already signalled: wait for the exit (a second SIGTERM could race the shutdown).
        assert await asyncio.to_thread(sidecar.proc.wait, 15) == 0
    finally:
        sidecar.kill()


def start_dev(cwd: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "llmgate_cli", "dev", "-f",
         str(ROOT / "examples" / "quickstart.yaml"), "--port", str(free_port()),
         "--log-level", "warning", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})


async def test_readyz_is_503_under_fail_closed_while_redis_is_down(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path, port=free_port())  # not started yet: Redis is down
    ops_port = free_port()
    proc = start_dev(tmp_path, "--ops-port", str(ops_port), "--redis-url", redis.url,
                     "--fail-mode", "failClosed")
    ops = f"http://127.0.0.1:{ops_port}"
    try:
        body = await wait_for_status(ops, 503)
        assert body["storeReady"] is False and body["generation"]
        redis.start()
        assert (await wait_for_status(ops, 200))["storeReady"] is True
        redis.stop()
        assert (await wait_for_status(ops, 503))["storeReady"] is False
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        redis.stop()
