"""Vertex AI: project/location URLs (Google's publisher for Gemini, Anthropic's rawPredict
for Claude) and a bearer token minted from a service-account key by `prepare()` against a
fake OAuth endpoint (signature checked), cached until it expires."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
from llmgate_sidecar.errors import UpstreamError
from llmgate_sidecar.upstream.providers import adapter_for
from llmgate_sidecar.upstream.providers.base import Credentials
from llmgate_sidecar.upstream.providers.vertex import VertexAIAdapter

from tests.fakes.gemini_upstream import TokenEndpoint, fake_vertex
from tests.fakes.replay import ReplayUpstream
from tests.sidecar.providers.gcp_key import service_account_key
from tests.sidecar.providers.streams import provider_config, target

FLASH = target("gemini-2.0-flash")
HI = {"model": "g", "messages": [{"role": "user", "content": "hi"}]}


def vertex(key: str | None, **fields: str) -> VertexAIAdapter:
    extra = {"gcp-service-account-key": key} if key else {}
    a = adapter_for(provider_config("vertex-ai", gcpProject="acme", **fields),
                    Credentials(extra=extra))
    assert isinstance(a, VertexAIAdapter)
    return a


CLAUDE = target("claude-sonnet-4-5@20250929")


@pytest.mark.parametrize(("stream", "method"), [(False, "rawPredict"),
                                                (True, "streamRawPredict")])
def test_claude_speaks_the_messages_api_at_anthropics_publisher(stream: bool,
                                                                method: str) -> None:
    request = vertex(None, gcpLocation="us-east5").chat_request({**HI, "max_tokens": 50},
                                                                CLAUDE, stream=stream)
    assert request.url == ("https://us-east5-aiplatform.googleapis.com/v1/projects/acme/"
                           "locations/us-east5/publishers/anthropic/models/"
                           f"claude-sonnet-4-5@20250929:{method}")
    body = orjson.loads(request.body)
    assert body == {"anthropic_version": "vertex-2023-10-16", "max_tokens": 50,
                    "messages": [{"role": "user", "content": [{"type": "text",
                                                               "text": "hi"}]}],
                    **({"stream": True} if stream else {})}


def test_claude_errors_in_anthropics_shape_are_anthropics_and_vertexs_are_googles() -> None:
    adapter = vertex(None)
    overloaded = orjson.dumps({"type": "error", "error": {"type": "overloaded_error",
                                                           "message": "Overloaded"}})
    quota = orjson.dumps({"error": {"code": 429, "message": "Quota exceeded",
                                    "status": "RESOURCE_EXHAUSTED"}})
    assert adapter.classify(529, {}, overloaded, CLAUDE).error_class == "serverError"
    assert adapter.classify(429, {}, quota, CLAUDE).error_class == "rateLimit"
    # The same Anthropic-shaped body for a Gemini model is not read as Anthropic's.
    assert adapter.classify(400, {}, overloaded, FLASH).error_class == "badRequest"


@pytest.fixture
async def oauth() -> AsyncIterator[tuple[ReplayUpstream, TokenEndpoint, str]]:
    tokens = TokenEndpoint("")
    fake = await fake_vertex(tokens).start()
    key, public = service_account_key(fake.url + "/token")
    tokens.public_key_pem = public
    yield fake, tokens, key
    await fake.close()


def test_url_has_project_and_location() -> None:
    url = vertex(None, gcpLocation="europe-west4").chat_request(HI, FLASH, stream=True).url
    assert url == ("https://europe-west4-aiplatform.googleapis.com/v1/projects/acme/locations/"
                   "europe-west4/publishers/google/models/gemini-2.0-flash"
                   ":streamGenerateContent?alt=sse")
    assert vertex(None, gcpLocation="global").chat_request(HI, FLASH, stream=False).url == (
        "https://aiplatform.googleapis.com/v1/projects/acme/locations/global/publishers/"
        "google/models/gemini-2.0-flash:generateContent")


async def test_prepare_mints_a_token_once_and_sends_it_as_bearer(
        oauth: tuple[ReplayUpstream, TokenEndpoint, str]) -> None:
    _, tokens, key = oauth
    adapter = vertex(key)
    await adapter.prepare()
    await adapter.prepare()  # still valid: no second trip to the token endpoint
    request = adapter.chat_request(HI, FLASH, stream=False)
    assert tokens.issued == ["ya29.fake-1"]
    assert request.headers["authorization"] == "Bearer ya29.fake-1"
    assert "x-goog-api-key" not in request.headers


async def test_refused_token_is_an_auth_error(
        oauth: tuple[ReplayUpstream, TokenEndpoint, str]) -> None:
    _, tokens, key = oauth
    tokens.fail_with = 400
    with pytest.raises(UpstreamError) as info:
        await vertex(key).prepare()
    assert info.value.error_class == "auth"
    assert "PRIVATE KEY" not in info.value.message


async def test_unreachable_token_endpoint_is_a_connection_error() -> None:
    key, _ = service_account_key("http://127.0.0.1:9/token")
    with pytest.raises(UpstreamError) as info:
        await vertex(key).prepare()
    assert info.value.error_class == "connectionError"


async def test_key_that_is_not_json_is_an_auth_error() -> None:
    with pytest.raises(UpstreamError) as info:
        await vertex("not-json").prepare()
    assert info.value.error_class == "auth"
