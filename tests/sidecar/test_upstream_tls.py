"""TLS to upstreams (`upstream.tls`): the real `llmgate sidecar` process against an https
upstream on loopback whose certificate a test CA signed.

- Trusted through the pod's `SSL_CERT_FILE` (a private CA bundle), requests go through: the
  sidecar's own context is the one that verifies, created when the first https request
  needs it, with the environment as the pod set it.
- The transport uses that context for an upstream URL spelt `HTTPS://` too (schemes are
  case-insensitive; the CRDs' baseURL pattern admits only lower case, but the compiled
  config and `AWS_ENDPOINT_URL_STS` take any): in process, since only a compiled config
  written by hand would carry one to the sidecar process.
- Not trusted (the machine's CA bundle does not know the test CA), the handshake fails: a
  503 `upstream_unreachable` naming the certificate error, and nothing reaches the
  upstream: verification is on.
- aiohttp is imported without its import-time CA loads, and the environment is as it was
  afterwards (a probe in a fresh interpreter, as `llmgate sidecar` starts).
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from llmgate_sidecar.upstream import tls
from llmgate_sidecar.upstream.providers.base import UpstreamRequest
from llmgate_sidecar.upstream.tls import is_https
from llmgate_sidecar.upstream.transport import HttpTransport

from tests.cluster.pki import Pki, make_pki
from tests.hostile.sidecar_process import AUTH, SidecarProcess, chat_body
from tests.sidecar.harness import provider, route, virtual_key


class HttpsUpstream:
    """A minimal OpenAI chat-completions answer over TLS on 127.0.0.1 (the test CA's cert)."""

    def __init__(self, pki: Pki) -> None:
        self.pki = pki
        self.requests = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> HttpsUpstream:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.pki.server_cert, self.pki.server_key)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"https://127.0.0.1:{port}/v1"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests += 1
        return web.json_response({
            "id": "chatcmpl-tls", "object": "chat.completion", "created": 1,
            "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "over TLS"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})


@pytest.fixture
async def upstream(tmp_path: Path) -> AsyncIterator[HttpsUpstream]:
    pki_dir = tmp_path / "pki"
    pki_dir.mkdir()
    server = await HttpsUpstream(make_pki(pki_dir)).start()
    try:
        yield server
    finally:
        await server.close()


async def ask(tmp_path: Path, upstream: HttpsUpstream) -> tuple[int, dict[str, object]]:
    sidecar = SidecarProcess(tmp_path / "sidecar", [
        provider("secure", baseURL=upstream.url),
        route("m", [{"provider": "secure", "model": "m"}], retry={"attempts": 1}),
        virtual_key("team", secretName="team-key")], request_timeout=20)
    try:
        await sidecar.ready()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            async with session.post(sidecar.url + "/v1/chat/completions",
                                    json=chat_body("m"), headers=AUTH) as response:
                return response.status, await response.json()
    finally:
        sidecar.kill()


async def test_an_https_upstream_trusted_by_the_pods_ca_bundle_is_served(
        tmp_path: Path, upstream: HttpsUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(upstream.pki.ca_cert))  # the pod's CA bundle
    (tmp_path / "sidecar").mkdir()
    status, answer = await ask(tmp_path, upstream)
    assert status == 200, answer
    assert answer["choices"][0]["message"]["content"] == "over TLS"  # type: ignore[index]
    assert upstream.requests == 1


async def test_an_upstream_certificate_nobody_trusts_is_refused(
        tmp_path: Path, upstream: HttpsUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)  # the machine's CAs only
    (tmp_path / "sidecar").mkdir()
    status, answer = await ask(tmp_path, upstream)
    # Never connected (the handshake failed): unreachable, nothing sent, nothing billed.
    assert status == 503, answer
    error = answer["error"]
    assert error["code"] == "upstream_unreachable"  # type: ignore[index]
    assert "CertificateError" in error["message"]  # type: ignore[index]
    assert upstream.requests == 0


@pytest.mark.parametrize("scheme", ["https", "HTTPS", "Https"])
async def test_the_transport_verifies_with_the_sidecars_context_in_any_case_of_the_scheme(
        upstream: HttpsUpstream, monkeypatch: pytest.MonkeyPatch, scheme: str) -> None:
    """The sidecar's context is set to one that trusts the test CA in place of the lazily
    loaded one (this pytest process may hold that already); aiohttp's own default context,
    which a URL not seen as https would get, does not know the test CA: a certificate error."""
    monkeypatch.setattr(tls, "_context",
                        ssl.create_default_context(cafile=str(upstream.pki.ca_cert)))
    url = scheme + upstream.url.removeprefix("https") + "/chat/completions"
    transport = HttpTransport()
    try:
        response = await transport.send(
            UpstreamRequest("POST", url, {"Content-Type": "application/json"},
                            json.dumps(chat_body("m")).encode()),
            timeout=10, provider="secure", model="m")
        assert response.status == 200
        assert json.loads(await response.read())["choices"][0]["message"]["content"] == \
            "over TLS"
        response.release()
    finally:
        await transport.close()
    assert upstream.requests == 1


@given(st.sampled_from(["https", "http", "ws"]).flatmap(
    lambda scheme: st.tuples(st.just(scheme), st.lists(st.booleans(), min_size=len(scheme),
                                                        max_size=len(scheme)))),
       st.text(max_size=20))
def test_https_is_decided_by_the_scheme_in_any_case(
        scheme_and_case: tuple[str, list[bool]], rest: str) -> None:
    scheme, upper = scheme_and_case
    spelt = "".join(c.upper() if u else c for c, u in zip(scheme, upper, strict=True))
    assert is_https(f"{spelt}://{rest}") is (scheme == "https")
    assert not is_https(f"{spelt}") and not is_https(f"//{spelt}:")


PROBE = """
import asyncio, json, os, sys
from llmgate_sidecar.upstream import tls
tls.import_aiohttp()
import aiohttp.connector
from llmgate_sidecar.server import main  # everything `llmgate sidecar` imports
ours = asyncio.run(tls.client_context())
print(json.dumps({
    "aiohttp": aiohttp.connector._SSL_CONTEXT_VERIFIED.cert_store_stats()["x509"],
    "env": os.environ.get("SSL_CERT_FILE"),
    "ours": ours.cert_store_stats()["x509"],
    "verify": [ours.verify_mode == __import__("ssl").CERT_REQUIRED, ours.check_hostname]}))
"""


def test_aiohttp_is_imported_without_loading_cas_and_the_environment_is_kept(
        tmp_path: Path, upstream: HttpsUpstream) -> None:
    ca = str(upstream.pki.ca_cert)
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "SSL_CERT_FILE": ca}, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    # aiohttp's import-time contexts hold no CA; ours loads the pod's bundle (one CA here).
    assert seen == {"aiohttp": 0, "env": ca, "ours": 1, "verify": [True, True]}
