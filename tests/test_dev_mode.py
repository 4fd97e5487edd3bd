"""The README's first command, for real: `llmgate dev -f examples/quickstart.yaml` in a child
process, answered through the official OpenAI and Anthropic SDKs with no API key of any
provider: chat (plain and streamed), embeddings, completions, Responses (plain and
streamed), Messages; paths the mock cannot serve end in an honest error; then SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import anthropic
import openai
import pytest

from tests.conftest import free_port
from tests.fakes.openai_upstream import FakeOpenAI

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
    vectors = c.embeddings.create(model="embeddings", input=["a", "b"])
    assert [len(d.embedding) for d in vectors.data] == [1536, 1536]
    completion = c.completions.create(model="gpt-4o-mini", prompt="Once upon a time")
    assert completion.object == "text_completion" and completion.choices[0].text
    response = c.responses.create(model="gpt-4o-mini", input="hello responses")
    assert "hello responses" in response.output_text and response.usage is not None
    with c.responses.stream(model="gpt-4o-mini", input="stream responses") as events:
        assert "stream responses" in "".join(
            e.delta for e in events if e.type == "response.output_text.delta")
        assert events.get_final_response().status == "completed"
    message = anthropic.Anthropic(base_url=base_url.removesuffix("/v1"),
                                  api_key="lg-quickstart-demo-key", max_retries=0
                                  ).messages.create(model="gpt-4o-mini", max_tokens=50,
                                                    messages=[{"role": "user",
                                                               "content": "hi claude"}])
    assert "hi claude" in message.content[0].text  # type: ignore[union-attr]
    # Images: only the unreachable OpenAI-compatible target could serve them: an honest
    # 5xx in OpenAI's envelope once it failed, never a 200 of the wrong shape.
    with pytest.raises(openai.APIStatusError) as info:
        c.images.generate(model="gpt-4o-mini", prompt="a cat")
    assert info.value.status_code >= 500 and "error" in info.value.response.json()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    output = proc.stdout.read() if proc.stdout else ""
    assert "serving 1 route(s)" in output
    assert "lg-quickstart-demo-key" not in output  # keys from files are never printed


ROUTE = """apiVersion: llmgate.io/v1alpha1
kind: ProviderSecret
metadata: {name: mock}
spec: {provider: mock, mock: {reply: "from %(version)s"}}
---
apiVersion: llmgate.io/v1alpha1
kind: LLMRoute
metadata: {name: chat}
spec:
  strategy: %(strategy)s
  targets:
    - {provider: mock, model: m}
---
apiVersion: llmgate.io/v1alpha1
kind: VirtualKey
metadata: {name: k}
spec: {}
---
apiVersion: v1
kind: Secret
metadata: {name: k-llmgate-key}
stringData: {api-key: lg-test-key}
"""


def _dev(tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "llmgate_cli", "dev", "-f", str(tmp_path / "crs.yaml"),
         "--port", str(free_port()), "--ops-port", str(free_port()), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_strict_refuses_to_start_on_an_invalid_cr(tmp_path: Path) -> None:
    (tmp_path / "crs.yaml").write_text(ROUTE % {"version": "v1", "strategy": "round-robin"})
    proc = _dev(tmp_path, "--strict")
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1, output
    assert f"{tmp_path / 'crs.yaml'}:10:3: error: LLMRoute/chat spec.strategy" in output
    assert "--strict: 1 error(s) in the input files; not starting" in output


def test_dev_exits_non_zero_when_every_cr_is_invalid(tmp_path: Path) -> None:
    (tmp_path / "crs.yaml").write_text(
        "apiVersion: llmgate.io/v1alpha1\nkind: LLMRoutes\nmetadata: {name: a}\nspec: {}\n")
    proc = _dev(tmp_path)
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1, output
    assert "kind 'LLMRoutes' is not defined in llmgate.io (did you mean LLMRoute?)" in output
    assert "every llmgate resource (1) is invalid; nothing to serve" in output


def _readyz(ops: str) -> dict[str, object]:
    with urllib.request.urlopen(ops + "/readyz", timeout=2) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def test_an_invalid_edit_keeps_the_last_good_version_in_service(tmp_path: Path) -> None:
    """The issue's case: a typo in `strategy` used to drop the route (404s) while /readyz
    said all was well. Now the previous version keeps serving and /readyz says why."""
    crs = tmp_path / "crs.yaml"
    crs.write_text(ROUTE % {"version": "v1", "strategy": "fallback"})
    port, ops_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmgate_cli", "dev", "-f", str(crs), "--port", str(port),
         "--ops-port", str(ops_port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    ops = f"http://127.0.0.1:{ops_port}"
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="lg-test-key",
                           max_retries=0)

    def reply() -> str:
        result = client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}])
        return result.choices[0].message.content or ""

    def wait_for(check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 15
        while not check():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)

    try:
        wait_ready(ops, proc)
        assert reply() == "from v1" and _readyz(ops)["inputs"] == "ok"
        # The bad edit: the ProviderSecret changes too (valid), the route becomes invalid.
        generation = _readyz(ops)["generation"]
        crs.write_text(ROUTE % {"version": "v2", "strategy": "round-robin"})
        wait_for(lambda: _readyz(ops)["generation"] != generation)
        status = _readyz(ops)
        assert status["ready"] is True and status["inputs"] == "rejected"
        assert any(f"{crs}:10:3: error: LLMRoute/chat spec.strategy" in e
                   for e in status["inputErrors"])  # type: ignore[union-attr]
        assert "LLMRoute/chat" in status["servingLastGood"]  # type: ignore[operator]
        for _ in range(20):
            assert reply() == "from v2"    # the route is still served, never a 404
        crs.write_text(ROUTE % {"version": "v3", "strategy": "loadbalance"})
        wait_for(lambda: _readyz(ops)["inputs"] == "ok")
        wait_for(lambda: reply() == "from v3")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)


def test_a_file_that_stops_parsing_keeps_what_it_held(tmp_path: Path) -> None:
    """A half-saved edit (broken YAML) must not delete the file's CRs: they keep serving
    their last good versions until the file parses again; a deleted CR does go away."""
    from llmgate_cli.dev import DevCompiler

    crs = tmp_path / "crs.yaml"
    crs.write_text(ROUTE % {"version": "v1", "strategy": "fallback"})
    compiler = DevCompiler([str(crs)], "default", tmp_path / "out")
    assert [r.name for r in compiler.compile_once().result.config.routes] == ["chat"]
    crs.write_text(ROUTE % {"version": "v2", "strategy": "fallback"} + "oops: [\n")
    outcome = compiler.compile_once()
    assert [r.name for r in outcome.result.config.routes] == ["chat"]
    assert outcome.result.config.providers["mock"].mock.reply == "from v1"  # type: ignore[union-attr]
    assert set(outcome.stale) == {"ProviderSecret/mock", "LLMRoute/chat", "VirtualKey/k"}
    assert any("invalid YAML" in str(p) for p in outcome.rejected)
    crs.write_text(ROUTE.split("---\napiVersion: llmgate.io/v1alpha1\nkind: LLMRoute")[0])
    outcome = compiler.compile_once()
    assert outcome.result.config.routes == [] and outcome.stale == {}



SECRET_HEADER = """apiVersion: llmgate.io/v1alpha1
kind: ProviderSecret
metadata: {name: up}
spec:
  provider: openai
  baseURL: %(url)s
  apiKey: {secretKeyRef: {name: up-creds, key: token}}
  secretHeaders:
    X-Api-Key: {secretKeyRef: {name: up-creds, key: header}}
---
apiVersion: llmgate.io/v1alpha1
kind: LLMRoute
metadata: {name: chat}
spec:
  targets:
    - {provider: up, model: m}
---
apiVersion: v1
kind: Secret
metadata: {name: up-creds}
stringData: {token: sk-up-000, header: hv-dev-000}
---
""" + ROUTE.split("---\n", 2)[2]   # the VirtualKey and its key Secret


async def test_dev_sends_secret_headers_from_secret_manifests(tmp_path: Path) -> None:
    """`llmgate dev` resolves secretHeaders from the Secret manifests in its files and sends
    the value upstream (a fake OpenAI upstream on this test's event loop)."""
    upstream = await FakeOpenAI().start()
    (tmp_path / "crs.yaml").write_text(SECRET_HEADER % {"url": upstream.url})
    proc = await asyncio.to_thread(_dev, tmp_path)
    try:
        args = list(proc.args)  # type: ignore[arg-type]
        port, ops = (args[args.index(flag) + 1] for flag in ("--port", "--ops-port"))
        await asyncio.to_thread(wait_ready, f"http://127.0.0.1:{ops}", proc)
        async with openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1",
                                      api_key="lg-test-key", max_retries=0) as c:
            await c.chat.completions.create(model="chat", messages=[
                {"role": "user", "content": "hi"}])
        assert [h["X-Api-Key"] for h in upstream.headers] == ["hv-dev-000"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()
        await upstream.close()
