"""Fake Gemini API and Vertex AI endpoints replaying `data/providers/gemini`.

`fake_gemini()` serves `/v1beta/models/{model}:generateContent` and
`:streamGenerateContent` (and `:batchEmbedContents`); `fake_vertex()` serves the same under
`/v1/projects/{p}/locations/{l}/publishers/google/models/…` (and `:predict` for
embeddings) plus an OAuth token endpoint
(`/token`) that checks the service-account JWT's signature before it issues a token.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from google.auth import jwt

from tests.fakes.replay import ReplayUpstream, Reply

VERTEX_PATH = "/v1/projects/{project}/locations/{location}/publishers/google/models/{call}"


def _default(request: web.Request, body: Any) -> Reply:
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


def fake_vertex(tokens: TokenEndpoint) -> ReplayUpstream:
    return ReplayUpstream("gemini", [VERTEX_PATH], _default, extra={"/token": tokens.handle})
