"""An OpenAI-family upstream's errors reach the official OpenAI SDK as the upstream wrote
them: its `type`, `code` and `param` (what apps branch on), llmgate's own reason beside them
under `llmgate`; servers that leave the code out (or echo the HTTP status in it) get
OpenAI's code for the class."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.fakes.replay import ReplayUpstream, Reply
from tests.sidecar.harness import Gateway
from tests.sidecar.providers.e2e import failed_request, gateway_for


def _default(request: web.Request, body: Any) -> Reply:
    return Reply("response_text.json")


@pytest.fixture
async def upstream() -> AsyncIterator[ReplayUpstream]:
    fake = await ReplayUpstream("openai", ["/v1/chat/completions"], _default).start()
    yield fake
    await fake.close()


@pytest.fixture
async def gateway(tmp_path: Path, upstream: ReplayUpstream) -> AsyncIterator[Gateway]:
    gw = await gateway_for(tmp_path, "openai", "gpt-4o-mini", baseURL=upstream.url + "/v1")
    yield gw
    await gw.close()


@pytest.mark.parametrize(("reply", "status", "code", "param"), [
    (Reply("error_model_not_found.json", status=404), 404, "model_not_found", "model"),
    (Reply("error_context_length.json", status=400), 400, "context_length_exceeded",
     "messages"),
    (Reply("error_max_tokens.json", status=400), 400, "invalid_value", "max_tokens"),
    (Reply("error_unsupported_parameter.json", status=400), 400, "unsupported_parameter",
     "max_tokens"),
    (Reply("error_rate_limit.json", status=429), 429, "rate_limit_exceeded", None),
    (Reply("error_vllm_context.json", status=400), 400, "context_length_exceeded",
     "messages"),
])
async def test_upstream_errors_keep_their_code_and_param(gateway: Gateway,
                                                         upstream: ReplayUpstream,
                                                         reply: Reply, status: int, code: str,
                                                         param: str | None) -> None:
    error = await failed_request(gateway, upstream, reply, status, code, param)
    upstream_type = (error.body or {}).get("type")  # type: ignore[attr-defined]
    if code == "rate_limit_exceeded":
        assert upstream_type == "tokens"  # the upstream's own type, not a generic one
        assert error.body["llmgate"]["code"] == "upstream_rate_limited"  # type: ignore[index]
    if reply.file == "error_vllm_context.json":
        assert upstream_type == "BadRequestError"
