"""AWS credentials from the pod's web identity (EKS IAM roles for service accounts).

When a Bedrock ProviderSecret names no access keys, the pod's identity is used: EKS injects
`AWS_ROLE_ARN` and `AWS_WEB_IDENTITY_TOKEN_FILE`, and STS `AssumeRoleWithWebIdentity`
exchanges the token for temporary credentials, refreshed before they expire. Called from the
Bedrock adapter's `prepare()` (the adapters' I/O hook); the STS answer is parsed by a pure
function. `AWS_ENDPOINT_URL_STS` overrides the endpoint (private endpoints, tests).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

from llmgate_sidecar.upstream.sigv4 import AwsCredentials
from llmgate_sidecar.upstream.tls import context_for

STS_VERSION = "2011-06-15"
# Refresh this long before the credentials expire, so no request signs with stale ones.
REFRESH_BEFORE = timedelta(minutes=5)
STS_TIMEOUT = 10.0


class WebIdentityError(Exception):
    """STS refused the token or answered something unreadable; the message says which."""


@dataclass(frozen=True)
class Temporary:
    credentials: AwsCredentials
    expiration: datetime


def parse_assume_role(xml: bytes) -> Temporary:
    """The credentials in an `AssumeRoleWithWebIdentity` answer (namespaces ignored)."""
    from xml.etree import ElementTree  # only Bedrock with web identity needs an XML parser

    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        raise WebIdentityError("STS answered with something that is not XML") from None
    values = {element.tag.rsplit("}", 1)[-1]: (element.text or "").strip()
              for element in root.iter()}
    if values.get("Code") or values.get("Message"):
        raise WebIdentityError(f"STS refused the web identity: {values.get('Code', '')} "
                               f"{values.get('Message', '')}".strip())
    try:
        credentials = AwsCredentials(values["AccessKeyId"], values["SecretAccessKey"],
                                     values.get("SessionToken") or None)
        expiration = datetime.fromisoformat(values["Expiration"].replace("Z", "+00:00"))
    except (KeyError, ValueError):
        raise WebIdentityError("STS answer has no usable Credentials") from None
    return Temporary(credentials, expiration)


class WebIdentity:
    """Temporary credentials for one role, fetched once and refreshed ahead of expiry."""

    def __init__(self, role_arn: str, token_file: str, region: str, *,
                 endpoint: str | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.role_arn, self.token_file = role_arn, token_file
        self.endpoint = (endpoint or f"https://sts.{region}.amazonaws.com").rstrip("/")
        self._clock = clock
        self._current: Temporary | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_environment(cls, env: Mapping[str, str], region: str) -> WebIdentity | None:
        role, token_file = env.get("AWS_ROLE_ARN"), env.get("AWS_WEB_IDENTITY_TOKEN_FILE")
        if not role or not token_file:
            return None
        return cls(role, token_file, region, endpoint=env.get("AWS_ENDPOINT_URL_STS"))

    async def credentials(self) -> AwsCredentials:
        if self._fresh():
            assert self._current is not None
            return self._current.credentials
        async with self._lock:  # one STS call, however many requests wait for it
            if not self._fresh():
                self._current = await self._assume()
            assert self._current is not None
            return self._current.credentials

    def _fresh(self) -> bool:
        return self._current is not None and \
            self._current.expiration - REFRESH_BEFORE > self._clock()

    async def _assume(self) -> Temporary:
        try:
            # Re-read every time: kubelet rotates the projected token file.
            token = (await asyncio.to_thread(Path(self.token_file).read_text)).strip()
        except OSError as exc:
            raise WebIdentityError(f"cannot read the web identity token: {exc}") from None
        params = {"Action": "AssumeRoleWithWebIdentity", "Version": STS_VERSION,
                  "RoleArn": self.role_arn, "RoleSessionName": f"llmgate-{int(time.time())}",
                  "WebIdentityToken": token}
        timeout = aiohttp.ClientTimeout(total=STS_TIMEOUT)
        try:
            tls = await context_for(self.endpoint)
            async with aiohttp.ClientSession(timeout=timeout) as session, session.post(
                    self.endpoint + "/", data=params, ssl=tls,
                    headers={"Accept": "application/xml"}) as response:
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise WebIdentityError(f"STS unreachable: {type(exc).__name__}") from None
        return parse_assume_role(body)
