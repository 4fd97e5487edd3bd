"""The Azure OpenAI adapter: deployment URL, api-version, `api-key`, and OpenAI decoding of
Azure's recorded bodies, streams and errors (content filter included)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from llmgate_sidecar.errors import UpstreamError
from llmgate_sidecar.upstream.providers import adapter_for
from llmgate_sidecar.upstream.providers.azure import DEFAULT_API_VERSION, AzureOpenAIAdapter
from llmgate_sidecar.upstream.providers.base import Credentials

from tests.fakes.replay import transcript
from tests.sidecar.providers.streams import chunks, decode, events_of, provider_config, target

DEPLOYMENT = target("gpt4o-prod")
BODY = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


def adapter(**fields: Any) -> AzureOpenAIAdapter:
    a = adapter_for(provider_config("azure-openai", baseURL="https://acme.openai.azure.com",
                                    **fields), Credentials(api_key="az-secret"))
    assert isinstance(a, AzureOpenAIAdapter)
    return a


def test_request_goes_to_the_deployment_with_api_version_and_api_key() -> None:
    request = adapter(azureApiVersion="2024-06-01").chat_request(BODY, DEPLOYMENT, stream=True)
    assert request.url == ("https://acme.openai.azure.com/openai/deployments/gpt4o-prod/"
                           "chat/completions?api-version=2024-06-01")
    assert request.headers["api-key"] == "az-secret"
    assert "authorization" not in request.headers
    sent = orjson.loads(request.body)
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["messages"] == BODY["messages"]


def test_default_api_version_and_an_endpoint_already_ending_in_openai() -> None:
    a = adapter_for(provider_config("azure-openai", baseURL="https://x.example/openai/"),
                    Credentials(api_key="k"))
    assert a.chat_request(BODY, DEPLOYMENT, stream=False).url == (
        f"https://x.example/openai/deployments/gpt4o-prod/chat/completions"
        f"?api-version={DEFAULT_API_VERSION}")


def test_response_and_usage_are_openai_shaped() -> None:
    payload, usage = adapter().chat_response(transcript("azure", "response_text.json"),
                                             DEPLOYMENT)
    assert orjson.loads(payload)["choices"][0]["message"]["content"] == "Hello from Azure"
    assert (usage.prompt_tokens, usage.completion_tokens) == (9, 3)


def test_stream_with_filter_results_and_usage() -> None:
    items = decode(adapter().stream_decoder(DEPLOYMENT, include_usage=False),
                   events_of(transcript("azure", "stream_text.sse")))
    out = chunks(items)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in out
                   if c != "[DONE]" and c["choices"]) == "Hello from Azure"
    assert all(c == "[DONE]" or "usage" not in c or c["usage"] is None for c in out)
    assert items[-1].usage is not None and items[-1].usage.completion_tokens == 3


def test_stream_cut_mid_way_is_a_connection_error() -> None:
    decoder = adapter().stream_decoder(DEPLOYMENT, include_usage=False)
    for event in events_of(transcript("azure", "stream_text.sse"))[:3]:
        decoder.feed(event)
    with pytest.raises(UpstreamError) as info:
        decoder.finish()
    assert info.value.error_class == "connectionError"


@pytest.mark.parametrize(("status", "file", "headers", "error_class"), [
    (400, "error_content_filter.json", {}, "contentFilter"),
    (429, "error_rate_limit.json", {"retry-after-ms": "2000"}, "rateLimit"),
    (401, "error_auth.json", {}, "auth"),
    (404, "error_deployment_not_found.json", {}, "badRequest"),
    (400, "error_context.json", {}, "contextWindow"),
])
def test_errors_are_classified(status: int, file: str, headers: dict[str, str],
                               error_class: str) -> None:
    error = adapter().classify(status, headers, transcript("azure", file), DEPLOYMENT)
    assert error.error_class == error_class
    assert "az-secret" not in error.message
    if status == 429:
        assert error.retry_after == 2.0


def test_filtering_reported_only_by_inner_error_code_is_content_filter() -> None:
    body = orjson.dumps({"error": {"code": "BadRequest", "message": "filtered",
                                   "innererror": {"code": "ResponsibleAIPolicyViolation"}}})
    assert adapter().classify(400, {}, body, DEPLOYMENT).error_class == "contentFilter"


def test_malformed_body_is_malformed() -> None:
    with pytest.raises(UpstreamError) as info:
        adapter().chat_response(b'{"id": 1}', DEPLOYMENT)
    assert info.value.error_class == "malformed"
