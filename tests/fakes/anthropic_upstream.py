"""A fake Anthropic Messages API (`POST /v1/messages`, `/v1/messages/count_tokens`) replaying
`data/providers/anthropic`.

Answers with the recorded text response or stream unless a test scripts another `Reply`;
a request that offers tools gets the recorded tool_use answer.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.fakes.replay import ReplayUpstream, Reply


def _default(request: web.Request, body: Any) -> Reply:
    if request.path.endswith("/count_tokens"):
        return Reply("count_tokens.json")
    tools = isinstance(body, dict) and bool(body.get("tools"))
    if isinstance(body, dict) and body.get("stream"):
        return Reply("stream_tool_use.sse" if tools else "stream_text.sse")
    return Reply("response_tool_use.json" if tools else "response_text.json")


def fake_anthropic() -> ReplayUpstream:
    return ReplayUpstream("anthropic", ["/v1/messages", "/v1/messages/count_tokens"],
                          _default)
