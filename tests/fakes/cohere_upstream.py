"""A fake Cohere v2 API (`POST /v2/chat`, `POST /v2/embed`) replaying `data/providers/cohere`."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.fakes.replay import ReplayUpstream, Reply


def _default(request: web.Request, body: Any) -> Reply:
    if request.path == "/v2/embed":
        return Reply("embed.json")
    tools = isinstance(body, dict) and bool(body.get("tools"))
    if isinstance(body, dict) and body.get("stream"):
        return Reply("stream_tool_call.sse" if tools else "stream_text.sse")
    return Reply("response_tool_call.json" if tools else "response_text.json")


def fake_cohere() -> ReplayUpstream:
    return ReplayUpstream("cohere", ["/v2/chat", "/v2/embed"], _default)
