"""Fake Gemini API and Vertex AI endpoints replaying `data/providers/gemini`.

`fake_gemini()` serves `/v1beta/models/{model}:generateContent` and
`:streamGenerateContent` (and `:batchEmbedContents`); `fake_vertex()` serves the same under
`/v1/projects/{p}/locations/{l}/publishers/google/models/…` (and `:predict` for
embeddings) plus an OAuth token endpoint
(`/token`) that checks the service-account JWT's signature before it issues a token, and
Anthropic's count-tokens endpoint on Vertex (`…/publishers/anthropic/models/
count-tokens:rawPredict`: Anthropic's count_tokens body with a `claude-…` model in it ->
`{"input_tokens": N}`, N by `claude_count_rule`; anything else Vertex's 400), and Claude's
Messages API on Vertex (`…/publishers/anthropic/models/{model}:rawPredict` and
`:streamRawPredict`) replaying `data/providers/anthropic`: the body must be a Messages
request without `model` and with `anthropic_version: "vertex-2023-10-16"`, streamed exactly
when it is sent to `:streamRawPredict` (else Vertex's 400).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from google.auth import jwt

from tests.fakes.replay import ReplayUpstream, Reply

VERTEX_PATH = "/v1/projects/{project}/locations/{location}/publishers/google/models/{call}"
VERTEX_CLAUDE_COUNT = ("/v1/projects/{project}/locations/{location}/publishers/anthropic/"
                       "models/count-tokens:rawPredict")
VERTEX_CLAUDE = "/v1/projects/{project}/locations/{location}/publishers/anthropic/models/{call}"
# What Anthropic's count_tokens body may hold.
CLAUDE_COUNT_FIELDS = frozenset({"model", "messages", "system", "tools", "tool_choice",
                                 "thinking", "mcp_servers"})


def _words(value: Any) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_words(item) for item in value)
    if isinstance(value, dict):
        return sum(_words(v) for k, v in value.items() if k in ("text", "content"))
    return 0


def claude_count_rule(body: dict[str, Any]) -> int:
    """The fake's Claude count: 3, plus one per word of every text (system and message
    content), plus 50 per tool."""
    return 3 + _words(body.get("system")) + _words(body.get("messages")) \
        + 50 * len(body.get("tools") or [])


def _vertex_refusal(message: str) -> Reply:
    return Reply(raw=orjson.dumps({"error": {"code": 400, "message": message,
                                             "status": "INVALID_ARGUMENT"}}), status=400)


def _claude_count(body: Any) -> Reply:
    if not isinstance(body, dict) or not set(body) <= CLAUDE_COUNT_FIELDS \
            or not isinstance(body.get("messages"), list):
        return _vertex_refusal("Invalid request body")
    if not str(body.get("model", "")).startswith("claude-"):
        return _vertex_refusal(f"Model {body.get('model')} does not support count-tokens")
    return Reply(raw=orjson.dumps({"input_tokens": claude_count_rule(body)}))


def _claude_check(request: web.Request, raw: bytes) -> web.Response | None:
    """Claude on Vertex takes a Messages body in Vertex's form (else Vertex's 400), checked
    before any reply, scripted or not."""
    if "/publishers/anthropic/" not in request.path \
            or request.path.endswith("count-tokens:rawPredict"):
        return None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    streamed = request.path.endswith(":streamRawPredict")
    problem = None
    if not isinstance(body, dict) or "model" in body \
            or not isinstance(body.get("messages"), list):
        problem = "Invalid request body: a Messages request without 'model'"
    elif body.get("anthropic_version") != "vertex-2023-10-16":
        problem = "anthropic_version: must be vertex-2023-10-16"
    elif not (streamed or request.path.endswith(":rawPredict")) \
            or bool(body.get("stream")) != streamed:
        problem = "stream must be true exactly for streamRawPredict"
    if problem is None:
        return None
    return web.json_response({"error": {"code": 400, "message": problem,
                                        "status": "INVALID_ARGUMENT"}}, status=400)


def _claude_messages(request: web.Request, body: Any) -> Reply:
    """Claude on Vertex: Anthropic's recorded answers."""
    tools = isinstance(body, dict) and bool(body.get("tools"))
    if request.path.endswith(":streamRawPredict"):
        return Reply("stream_tool_use.sse" if tools else "stream_text.sse",
                     provider="anthropic")
    return Reply("response_tool_use.json" if tools else "response_text.json",
                 provider="anthropic")


def _default(request: web.Request, body: Any) -> Reply:
    if request.path.endswith("count-tokens:rawPredict"):
        return _claude_count(body)
    if "/publishers/anthropic/" in request.path:
        return _claude_messages(request, body)
    tools = isinstance(body, dict) and bool(body.get("tools"))
    if request.path.endswith(":batchEmbedContents"):
        return Reply("embeddings.json")
    if request.path.endswith(":predict"):  # Vertex AI's text-embeddings call
        return Reply("vertex_predict_embeddings.json")
    if request.path.endswith(":streamGenerateContent"):
        return Reply("stream_function_call.sse" if tools else "stream_text.sse")
    return Reply("response_function_call.json" if tools else "response_text.json")


def fake_gemini() -> ReplayUpstream:
    return ReplayUpstream("gemini", ["/v1beta/models/{call}"], _default)


class TokenEndpoint:
    """Google's OAuth2 token endpoint for the JWT-bearer grant, verifying the assertion."""

    def __init__(self, public_key_pem: str) -> None:
        self.public_key_pem = public_key_pem
        self.issued: list[str] = []
        self.fail_with: int | None = None

    async def handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        if self.fail_with is not None:
            return web.json_response({"error": "invalid_grant",
                                      "error_description": "Invalid JWT Signature."},
                                     status=self.fail_with)
        assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
        # google-auth signs for Google's audience even when token_uri points elsewhere.
        decode: Any = jwt.decode
        claims = decode(str(form["assertion"]), certs=self.public_key_pem, verify=True,
                        audience="https://oauth2.googleapis.com/token")
        assert claims["scope"] == "https://www.googleapis.com/auth/cloud-platform"
        token = f"ya29.fake-{len(self.issued) + 1}"
        self.issued.append(token)
        return web.json_response({"access_token": token, "expires_in": 3600,
                                  "token_type": "Bearer"})


def fake_vertex(tokens: TokenEndpoint, scripted: str = "gemini") -> ReplayUpstream:
    """`scripted`: where a test's scripted `Reply` files are read from ("anthropic" for a
    test of Claude on Vertex); the default replies name their own directory."""
    # The count path first: it is also a `{call}` of the Claude path.
    return ReplayUpstream(scripted, [VERTEX_PATH, VERTEX_CLAUDE_COUNT, VERTEX_CLAUDE],
                          _vertex_default, extra={"/token": tokens.handle},
                          check=_claude_check)


def _vertex_default(request: web.Request, body: Any) -> Reply:
    reply = _default(request, body)
    if not reply.provider:
        reply.provider = "gemini"
    return reply
