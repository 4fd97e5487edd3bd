"""Bedrock through the pod's web identity (EKS IRSA): a ProviderSecret with only a region,
credentials from a fake STS speaking `AssumeRoleWithWebIdentity`, requests signed with them
and checked by the fake Bedrock; STS failures are clear auth errors, never crashes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import openai
import pytest
from aiohttp import web
from llmgate_sidecar.upstream.aws_identity import (
    WebIdentity,
    WebIdentityError,
    parse_assume_role,
)

from tests.fakes.bedrock_upstream import ACCESS_KEY_ID, SECRET_ACCESS_KEY, fake_bedrock
from tests.fakes.replay import ReplayUpstream
from tests.sidecar.providers.e2e import MESSAGES, client, gateway_for

MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
ROLE = "arn:aws:iam::123456789012:role/llmgate"
SESSION_TOKEN = "sts-session-token-abc"


def sts_answer(expiration: datetime) -> bytes:
    ns = "https://sts.amazonaws.com/doc/2011-06-15/"
    return (f'<AssumeRoleWithWebIdentityResponse xmlns="{ns}">'
            "<AssumeRoleWithWebIdentityResult><Credentials>"
            f"<AccessKeyId>{ACCESS_KEY_ID}</AccessKeyId>"
            f"<SecretAccessKey>{SECRET_ACCESS_KEY}</SecretAccessKey>"
            f"<SessionToken>{SESSION_TOKEN}</SessionToken>"
            f"<Expiration>{expiration.strftime('%Y-%m-%dT%H:%M:%SZ')}</Expiration>"
            "</Credentials></AssumeRoleWithWebIdentityResult>"
            "</AssumeRoleWithWebIdentityResponse>").encode()


class FakeSTS:
    def __init__(self) -> None:
        self.calls: list[dict[str, str]] = []
        self.refuse = False
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> FakeSTS:
        app = web.Application()
        app.router.add_post("/", self._assume)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _assume(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.calls.append(form)
        if self.refuse:
            return web.Response(status=403, content_type="text/xml", body=(
                b"<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>"
                b"<Message>Not authorized to perform sts:AssumeRoleWithWebIdentity</Message>"
                b"</Error></ErrorResponse>"))
        return web.Response(content_type="text/xml",
                            body=sts_answer(datetime.now(UTC) + timedelta(hours=1)))


@pytest.fixture
async def sts() -> AsyncIterator[FakeSTS]:
    fake = await FakeSTS().start()
    yield fake
    await fake.close()


@pytest.fixture
async def bedrock() -> AsyncIterator[ReplayUpstream]:
    fake = await fake_bedrock().start()
    yield fake
    await fake.close()


@pytest.fixture
def pod_identity(tmp_path: Path, sts: FakeSTS, monkeypatch: pytest.MonkeyPatch) -> Path:
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.projected-service-account-token\n")
    monkeypatch.setenv("AWS_ROLE_ARN", ROLE)
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts.url)
    return token


async def test_bedrock_without_keys_signs_with_the_pods_role(
        tmp_path: Path, pod_identity: Path, sts: FakeSTS, bedrock: ReplayUpstream) -> None:
    gw = await gateway_for(tmp_path, "bedrock", MODEL, api_key=False, baseURL=bedrock.url,
                           aws={"region": "eu-central-1"})
    try:
        async with client(gw) as c:
            for _ in range(3):
                result = await c.chat.completions.create(model="chat", messages=MESSAGES)
                assert result.choices[0].message.content == "Hello from Bedrock"
    finally:
        await gw.close()
    assert len(sts.calls) == 1  # cached until shortly before it expires
    assert sts.calls[0]["RoleArn"] == ROLE
    assert sts.calls[0]["WebIdentityToken"].endswith("projected-service-account-token")
    assert all(r.headers["x-amz-security-token"] == SESSION_TOKEN for r in bedrock.requests)


async def test_sts_refusal_is_a_clear_upstream_auth_error(
        tmp_path: Path, pod_identity: Path, sts: FakeSTS, bedrock: ReplayUpstream) -> None:
    sts.refuse = True
    gw = await gateway_for(tmp_path, "bedrock", MODEL, api_key=False, baseURL=bedrock.url,
                           aws={"region": "eu-central-1"})
    try:
        async with client(gw) as c:
            with pytest.raises(openai.APIStatusError) as info:
                await c.chat.completions.create(model="chat", messages=MESSAGES)
    finally:
        await gw.close()
    assert info.value.status_code == 502
    assert "AccessDenied" in str(info.value.body)
    assert bedrock.requests == []


async def test_credentials_are_refreshed_before_they_expire(
        pod_identity: Path, sts: FakeSTS) -> None:
    now = [datetime.now(UTC)]
    identity = WebIdentity(ROLE, str(pod_identity), "eu-central-1", endpoint=sts.url,
                           clock=lambda: now[0])
    first = await identity.credentials()
    assert (await identity.credentials()) is first and len(sts.calls) == 1
    now[0] += timedelta(minutes=56)  # within 5 minutes of the 1 h expiry
    await identity.credentials()
    assert len(sts.calls) == 2


def test_unreadable_sts_answers_raise_web_identity_errors() -> None:
    with pytest.raises(WebIdentityError, match="not XML"):
        parse_assume_role(b"<<<")
    with pytest.raises(WebIdentityError, match="no usable Credentials"):
        parse_assume_role(b"<AssumeRoleWithWebIdentityResponse/>")
    creds = parse_assume_role(sts_answer(datetime(2030, 1, 1, tzinfo=UTC)))
    assert creds.credentials.session_token == SESSION_TOKEN
    assert creds.expiration == datetime(2030, 1, 1, tzinfo=UTC)
    assert SECRET_ACCESS_KEY not in repr(creds.credentials)
