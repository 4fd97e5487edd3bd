"""`POST /v1/embeddings` with the official openai SDK on each provider that embeds (OpenAI
family, Azure, Gemini, Cohere), fallback past a provider without embeddings, the 400 when
none is left, upstream errors, and the input-token usage that is recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.fakes.azure_upstream import fake_azure
from tests.fakes.bedrock_upstream import fake_bedrock
from tests.fakes.cohere_upstream import fake_cohere
from tests.fakes.gemini_upstream import fake_gemini
from tests.fakes.openai_upstream import Behaviour, FakeOpenAI
from tests.fakes.replay import ReplayUpstream
from tests.sidecar.harness import provider, route, start_gateway, virtual_key
from tests.sidecar.inbound.upstreams import AWS_SPEC
from tests.sidecar.providers.e2e import PROVIDER_KEY, client, gateway_for

TEXTS = ["hello world", "good night moon"]
RECORDED = [[0.5, -0.25, 0.125], [-0.5, 0.75, 0.0625]]
KEY_REF = {"secretKeyRef": {"name": "up-cred", "key": "api-key"}}


def tokens(gw: Any, model: str, provider_name: str = "up") -> float | None:
    value: float | None = gw.metrics.registry.get_sample_value("llmgate_tokens_total", {
        "route": "chat", "provider": provider_name, "model": model, "virtual_key": "team",
        "direction": "input"})
    return value


@pytest.mark.parametrize(("kind", "model", "fake", "spec", "path", "usage"), [
    ("azure-openai", "embed-prod", fake_azure, {"azure": {"apiVersion": "2024-10-21"}},
     "/openai/deployments/embed-prod/embeddings", 7),
    ("gemini", "gemini-embedding-001", fake_gemini, {"suffix": "/v1beta"},
     "/v1beta/models/gemini-embedding-001:batchEmbedContents", None),
    ("cohere", "embed-v4.0", fake_cohere, {}, "/v2/embed", 6),
])
@pytest.mark.parametrize("encoding", ["base64", "float"])
async def test_translated_providers_answer_the_openai_sdk(
        tmp_path: Path, kind: str, model: str, fake: Callable[[], ReplayUpstream],
        spec: dict[str, Any], path: str, usage: int | None, encoding: str) -> None:
    upstream = await fake().start()
    spec = dict(spec)
    suffix = spec.pop("suffix", "")
    gw = await gateway_for(tmp_path, kind, model, baseURL=upstream.url + suffix, **spec)
    try:
        async with client(gw) as c:
            # The SDK asks for base64 by default and decodes it; "float" comes as lists.
            extra: dict[str, Any] = {"encoding_format": "float"} if encoding == "float" else {}
            result = await c.embeddings.create(model="chat", input=TEXTS, **extra)
        assert [d.embedding for d in result.data] == RECORDED
        assert [d.index for d in result.data] == [0, 1]
        sent = upstream.requests[0]
        assert sent.path == path
        assert PROVIDER_KEY in " ".join(sent.headers.values())
        if kind == "gemini":
            assert [r["content"]["parts"][0]["text"] for r in sent.body["requests"]] == TEXTS
            assert sent.body["requests"][0]["model"] == f"models/{model}"
        if kind == "cohere":
            assert sent.body["texts"] == TEXTS and sent.body["model"] == model
            assert sent.body["input_type"] == "search_document"
        assert tokens(gw, model) == usage
        if usage is not None:
            assert result.usage.prompt_tokens == usage
    finally:
        await gw.close()
        await upstream.close()


@pytest.fixture
async def openai_up() -> AsyncIterator[FakeOpenAI]:
    fake = await FakeOpenAI().start()
    yield fake
    await fake.close()


async def test_openai_family_is_forwarded_with_the_targets_model(
        tmp_path: Path, openai_up: FakeOpenAI) -> None:
    gw = await gateway_for(tmp_path, "openai-compatible", "text-embedding-3-small",
                           baseURL=openai_up.url)
    try:
        async with client(gw) as c:
            result = await c.embeddings.create(model="chat", input="hello there world",
                                               dimensions=3)
        assert result.data[0].embedding == [17.0, 0.5, -0.25]
        sent = openai_up.requests[0]
        assert sent["model"] == "text-embedding-3-small" and sent["dimensions"] == 3
        assert openai_up.headers[0]["Authorization"] == f"Bearer {PROVIDER_KEY}"
        assert result.usage.prompt_tokens == 3
        assert tokens(gw, "text-embedding-3-small") == 3
    finally:
        await gw.close()


async def test_provider_without_embeddings_is_skipped_then_refused(
        tmp_path: Path, openai_up: FakeOpenAI) -> None:
    resources = [provider("claude", "anthropic", baseURL="http://127.0.0.1:9", apiKey=KEY_REF),
                 provider("oai", "openai-compatible", baseURL=openai_up.url, apiKey=KEY_REF),
                 route("chat", [{"provider": "claude", "model": "claude-sonnet-4-5"},
                                {"provider": "oai", "model": "text-embedding-3-small"}],
                       strategy="fallback"),
                 route("only-claude", [{"provider": "claude", "model": "claude-sonnet-4-5"}]),
                 virtual_key("team", secretName="team-key")]
    gw = await start_gateway(tmp_path, resources, {"up-cred": {"api-key": PROVIDER_KEY}})
    try:
        async with client(gw) as c:
            raw = await c.embeddings.with_raw_response.create(model="chat", input="hi")
            with pytest.raises(openai.BadRequestError) as refused:
                await c.embeddings.create(model="only-claude", input="hi")
        assert raw.headers["x-llmgate-provider"] == "oai"
        assert len(raw.parse().data) == 1
        assert refused.value.body["code"] == "embeddings_not_supported"  # type: ignore[index]
        assert "claude (anthropic)" in refused.value.body["message"]  # type: ignore[index]
    finally:
        await gw.close()


async def test_upstream_errors_and_bad_inputs(tmp_path: Path, openai_up: FakeOpenAI) -> None:
    openai_up.script.append(Behaviour(kind="status", status=429, headers={"retry-after": "4"},
                                      body={"error": {"message": "slow down",
                                                      "type": "rate_limit_error"}}))
    gw = await gateway_for(tmp_path, "openai-compatible", "text-embedding-3-small",
                           baseURL=openai_up.url)
    try:
        async with client(gw) as c:
            with pytest.raises(openai.RateLimitError) as limited:
                await c.embeddings.create(model="chat", input="hi")
            with pytest.raises(openai.BadRequestError) as empty:
                await c.embeddings.create(model="chat", input=[])
            with pytest.raises(openai.NotFoundError):
                await c.embeddings.create(model="nope", input="hi")
        assert limited.value.response.headers["retry-after"] == "4"
        assert empty.value.body["param"] == "input"  # type: ignore[index]
    finally:
        await gw.close()


@pytest.mark.parametrize(("model", "calls"), [
    ("amazon.titan-embed-text-v2:0", 100),  # Titan takes one input per call
    ("cohere.embed-english-v3", 2),  # Cohere Embed takes 96
])
async def test_bedrock_embeddings_one_signed_invoke_per_slice_of_input(
        tmp_path: Path, model: str, calls: int) -> None:
    upstream = await fake_bedrock().start()
    gw = await gateway_for(tmp_path, "bedrock", model, baseURL=upstream.url, **AWS_SPEC)
    texts = [f"text number {'x' * i}" for i in range(100)]
    try:
        async with client(gw) as c:
            result = await c.embeddings.create(model="chat", input=texts, dimensions=256,
                                               encoding_format="float")
            single = await c.embeddings.create(model="chat", input="one")
        # Joined in input order, re-indexed, every call signed (the fake checks SigV4).
        assert [d.embedding for d in result.data] == [[float(len(t)), 0.5, -0.5]
                                                      for t in texts]
        assert [d.index for d in result.data] == list(range(100))
        assert single.data[0].embedding == pytest.approx([3.0, 0.5, -0.5])
        invokes = [r for r in upstream.requests if r.path.endswith("/invoke")]
        assert len(invokes) == calls + 1
        assert all(r.path == f"/model/{model}/invoke" for r in invokes)
        if calls == 100:
            assert invokes[0].body == {"inputText": texts[0], "dimensions": 256}
            assert result.usage.prompt_tokens == sum(len(t.split()) for t in texts)  # Titan
        else:
            assert invokes[0].body["texts"] == texts[:96]
            assert invokes[0].body["input_type"] == "search_document"
            assert invokes[0].body["output_dimension"] == 256
    finally:
        await gw.close()
        await upstream.close()
