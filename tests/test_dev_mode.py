"""The README's first command, for real: `llmgate dev -f examples/quickstart.yaml` in a child
process, answered through the official OpenAI SDK (plain and streamed), then SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


def wait_ready(ops: str, proc: subprocess.Popen[str], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"llmgate dev exited early: {output}")
        try:
            with urllib.request.urlopen(ops + "/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise AssertionError("llmgate dev did not become ready")


@pytest.fixture
def dev_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    port, ops_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmgate_cli", "dev", "-f",
         str(ROOT / "examples" / "quickstart.yaml"), "--port", str(port),
         "--ops-port", str(ops_port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_ready(f"http://127.0.0.1:{ops_port}", proc)
        yield f"http://127.0.0.1:{port}/v1", proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_quickstart_serves_the_openai_sdk_plain_and_streamed(dev_server) -> None:  # type: ignore[no-untyped-def]
    base_url, proc = dev_server
    c = openai.OpenAI(base_url=base_url, api_key="lg-quickstart-demo-key", max_retries=0)
    result = c.chat.completions.create(model="gpt-4o-mini",
                                       messages=[{"role": "user", "content": "hello llmgate"}])
    assert "hello llmgate" in (result.choices[0].message.content or "")
    stream = c.chat.completions.create(model="default", stream=True,
                                       messages=[{"role": "user", "content": "stream please"}])
    text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    assert "stream please" in text
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0).models.list()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    output = proc.stdout.read() if proc.stdout else ""
    assert "serving 1 route(s)" in output
    assert "lg-quickstart-demo-key" not in output  # keys from files are never printed
