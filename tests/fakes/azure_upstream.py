"""A fake Azure OpenAI resource replaying `data/providers/azure`.

Serves `POST /openai/deployments/{deployment}/chat/completions?api-version=...`; answers
with the recorded completion or stream (a tool call when the request offers tools), and
`.../embeddings` with the recorded embeddings list.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from tests.fakes.openai_upstream import schema_error
from tests.fakes.replay import ReplayUpstream, Reply


def _default(request: web.Request, body: Any) -> Reply:
    if request.path.endswith("/embeddings"):
        return Reply("embeddings.json")
    tools = isinstance(body, dict) and bool(body.get("tools"))
    if isinstance(body, dict) and body.get("stream"):
        return Reply("stream_tool_call.sse" if tools else "stream_text.sse")
    return Reply("response_tool_call.json" if tools else "response_text.json")


def _strict(request: web.Request, raw: bytes) -> web.Response | None:
    """Azure validates chat messages as OpenAI does (`schema_error`)."""
    if not request.path.endswith("/chat/completions"):
        return None
    refused = schema_error(orjson.loads(raw))
    return None if refused is None else web.json_response(refused, status=400)


def fake_azure(*, strict_messages: bool = False) -> ReplayUpstream:
    return ReplayUpstream("azure", ["/openai/deployments/{deployment}/chat/completions",
                                    "/openai/deployments/{deployment}/embeddings"], _default,
                          check=_strict if strict_messages else None)
