"""A fake Bedrock runtime (`/model/{modelId}/converse[-stream]`) replaying
`data/providers/bedrock`, ConverseStream as real AWS event-stream binary frames; and
InvokeModel (`/model/{modelId}/invoke`) for embeddings in the documented Titan and Cohere
Embed shapes, each vector derived from its input ([characters, 0.5, -0.5]) so order shows;
and CountTokens (`/model/{modelId}/count-tokens`, `{"input": {"converse": {...}}}` ->
`{"inputTokens": N}`) for Claude models only, as Bedrock documents it (other models get its
ValidationException), with N derived from the input (`count_rule`).

Every request's SigV4 signature is recomputed from what actually arrived (method, raw path,
host, body, signed headers) with the test secret; a mismatch gets Bedrock's 403.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from llmgate_sidecar.upstream.sigv4 import AwsCredentials, sign
from llmgate_sidecar.wire.eventstream import encode_frame

from tests.fakes.replay import ReplayUpstream, Reply

ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
EVENTSTREAM = "application/vnd.amazon.eventstream"
_AUTH = re.compile(r"Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
                   r"SignedHeaders=([^,]+), Signature=([0-9a-f]{64})")


def frames(raw: bytes) -> list[bytes]:
    """Encode each JSON line (`headers`, `payload`) of a transcript as one binary frame."""
    out = []
    for line in raw.splitlines():
        if line.strip():
            entry = orjson.loads(line)
            out.append(encode_frame(entry["headers"], orjson.dumps(entry["payload"])))
    return out


def stream_reply(file: str, **kwargs: Any) -> Reply:
    return Reply(file, frames=frames, content_type=EVENTSTREAM, **kwargs)


def _embeddings(model: str, body: Any) -> Reply:
    if "cohere.embed" in model:
        texts = body["texts"]
        if len(texts) > 96:
            return Reply(raw=orjson.dumps({"message": "Malformed input request: expected "
                                           "maxItems: 96"}), status=400)
        return Reply(raw=orjson.dumps({
            "id": "emb-1", "response_type": "embeddings_by_type", "texts": texts,
            "embeddings": {"float": [[float(len(t)), 0.5, -0.5] for t in texts]}}))
    text = body["inputText"]  # Titan: exactly one string, or Bedrock's own 400
    if not isinstance(text, str):
        return Reply(raw=orjson.dumps({"message": "Malformed input request"}), status=400)
    return Reply(raw=orjson.dumps({"embedding": [float(len(text)), 0.5, -0.5],
                                   "inputTextTokenCount": len(text.split())}))


# The members CountTokens' `converse` input takes (ConverseTokensRequest).
COUNT_MEMBERS = frozenset({"messages", "system", "toolConfig", "additionalModelRequestFields"})


def _words(value: Any) -> int:
    if isinstance(value, dict):
        return sum(len(str(v).split()) if k == "text" else _words(v) for k, v in value.items())
    if isinstance(value, list):
        return sum(_words(item) for item in value)
    return 0


def count_rule(converse: dict[str, Any]) -> int:
    """The fake's token count: 3, plus one per word of every text block (messages and
    system), plus 50 per tool offered."""
    tools = (converse.get("toolConfig") or {}).get("tools") or []
    return 3 + _words(converse.get("messages")) + _words(converse.get("system")) + 50 * len(tools)


def _validation(message: str) -> Reply:
    return Reply(raw=orjson.dumps({"message": message}), status=400, headers={
        "x-amzn-ErrorType": "ValidationException:http://internal.amazon.com/coral/"
                            "com.amazon.bedrock/"})


def _count(model: str, body: Any) -> Reply:
    if not model.startswith("anthropic.claude"):
        return _validation("The provided model doesn't support counting tokens.")
    request = body.get("input") if isinstance(body, dict) else None
    converse = request.get("converse") if isinstance(request, dict) else None
    if (not isinstance(request, dict) or not isinstance(converse, dict)
            or set(request) != {"converse"}
            or not set(converse) <= COUNT_MEMBERS
            or not isinstance(converse.get("messages"), list)
            or not all(isinstance(m, dict) and isinstance(m.get("content"), list)
                       for m in converse["messages"])):
        return _validation("Malformed input request, please reformat your input and try again.")
    return Reply(raw=orjson.dumps({"inputTokens": count_rule(converse)}))


def _default(request: web.Request, body: Any) -> Reply:
    if request.path.endswith("/count-tokens"):
        return _count(request.match_info["model"], body)
    if request.path.endswith("/invoke"):
        return _embeddings(request.match_info["model"], body)
    tools = isinstance(body, dict) and bool(body.get("toolConfig"))
    if request.path.endswith("/converse-stream"):
        return stream_reply("stream_tool_use.eventstream" if tools
                            else "stream_text.eventstream")
    return Reply("response_tool_use.json" if tools else "response_text.json")


def check_signature(request: web.Request, body: bytes) -> web.Response | None:
    match = _AUTH.search(request.headers.get("Authorization", ""))
    if match is None or match.group(1) != ACCESS_KEY_ID:
        return _denied("UnrecognizedClientException", "The security token included in the "
                       "request is invalid.")
    _, _, region, service, names, signature = match.groups()
    signed = {n: request.headers[n] for n in names.split(";")
              if n not in ("host", "x-amz-date", "x-amz-security-token")}
    now = datetime.strptime(request.headers["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    token = request.headers.get("x-amz-security-token")
    expected = sign(request.method, f"http://{request.host}{request.raw_path}", signed, body,
                    credentials=AwsCredentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY, token),
                    region=region, service=service, now=now)
    if expected["authorization"].rsplit("=", 1)[1] != signature:
        return _denied("InvalidSignatureException", "The request signature we calculated "
                       "does not match the signature you provided.")
    return None


def _denied(kind: str, message: str) -> web.Response:
    return web.json_response({"message": message}, status=403,
                             headers={"x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/"
                                      "coral/com.amazon.coral.service/"})


def fake_bedrock() -> ReplayUpstream:
    return ReplayUpstream("bedrock", ["/model/{model}/converse", "/model/{model}/converse-stream",
                                      "/model/{model}/invoke", "/model/{model}/count-tokens"],
                          _default, check=check_signature)
