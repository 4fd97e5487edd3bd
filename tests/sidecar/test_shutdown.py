"""Graceful shutdown: SIGTERM stops accepting, drains in-flight streams, exits 0.

One test runs a real `llmgate dev` child process and signals it; one runs `server.serve`
in-process with a stop event and a grace period shorter than the stream, to pin down what
a client sees when the grace runs out.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import yaml
from llmgate_sidecar.server import serve
from llmgate_sidecar.settings import SidecarSettings

from tests.conftest import free_port
from tests.sidecar.harness import KEY, compile_to, provider, route, virtual_key

WORDS = " ".join(f"w{i}" for i in range(30))
CHUNK_MS = 50  # so a stream lasts about 1.5 s: long enough to signal in the middle
HANG_GUARD = 20.0


def crs(chunk_ms: int = CHUNK_MS) -> list[dict]:
    return [provider("mock", "mock", mock={"reply": WORDS, "chunkDelayMs": chunk_ms}),
            route("slow", [{"provider": "mock", "model": "m"}]),
            virtual_key("team", secretName="team-key")]


async def wait_ready(ops_url: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(400):
            if proc is not None and proc.poll() is not None:
                raise AssertionError("the gateway exited before it was ready")
            try:
                async with session.get(ops_url + "/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("the gateway never became ready")


async def open_stream(session: aiohttp.ClientSession, base: str) -> aiohttp.ClientResponse:
    response = await session.post(
        base + "/v1/chat/completions",
        json={"model": "slow", "messages": [{"role": "user", "content": "go"}], "stream": True},
        headers={"Authorization": f"Bearer {KEY}"})
    assert response.status == 200
    assert b"assistant" in await response.content.readuntil(b"\n\n")
    return response


async def refused(base: str) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", int(base.rsplit(":", 1)[1]))
    except OSError:
        return True
    writer.close()
    return False


def data_lines(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


async def test_sigterm_drains_an_in_flight_stream_refuses_new_ones_and_exits_0(
        tmp_path: Path) -> None:
    docs = [*crs(), {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "team-key"},
                     "stringData": {"api-key": KEY}}]
    (tmp_path / "crs.yaml").write_text(yaml.safe_dump_all(docs))
    port, ops_port = free_port(), free_port()
    proc = subprocess.Popen(  # noqa: ASYNC220 (waited on in a thread below)
        [sys.executable, "-m", "llmgate_cli", "dev", "-f", str(tmp_path / "crs.yaml"),
         "--port", str(port), "--ops-port", str(ops_port), "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(f"http://127.0.0.1:{ops_port}", proc)
        async with aiohttp.ClientSession() as session:
            response = await open_stream(session, base)
            proc.send_signal(signal.SIGTERM)
            for _ in range(200):
                if await refused(base):
                    break
                await asyncio.sleep(0.01)
            assert await refused(base), "still accepting connections after SIGTERM"
            assert not response.content.at_eof()  # the stream is still being served
            text = await asyncio.wait_for(response.text(), HANG_GUARD)
        events = data_lines(text)
        assert events[-1] == "[DONE]"
        assert "w29" in text
        code = await asyncio.to_thread(proc.wait, HANG_GUARD)
        assert code == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


async def test_a_stream_longer_than_the_grace_ends_with_an_in_band_error(
        tmp_path: Path) -> None:
    compile_to(tmp_path, crs(chunk_ms=500), {"team-key": {"api-key": KEY}})
    settings = SidecarSettings(config_dir=str(tmp_path / "config"),
                               credentials_dir=str(tmp_path / "credentials"),
                               port=free_port(), ops_host="127.0.0.1", ops_port=free_port(),
                               shutdown_grace=0.3)
    stop = asyncio.Event()
    server = asyncio.create_task(serve(settings, stop=stop))
    base = f"http://127.0.0.1:{settings.port}"
    try:
        await wait_ready(f"http://127.0.0.1:{settings.ops_port}")
        async with aiohttp.ClientSession() as session:
            response = await open_stream(session, base)
            stop.set()
            text = await asyncio.wait_for(response.text(), HANG_GUARD)
        await asyncio.wait_for(server, HANG_GUARD)
    finally:
        if not server.done():
            server.cancel()
    events = data_lines(text)
    assert "[DONE]" not in events
    assert '"code":"shutdown"' in events[-1]
    assert "w29" not in text

