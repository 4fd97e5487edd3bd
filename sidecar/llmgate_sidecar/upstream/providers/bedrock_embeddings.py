"""Embeddings on Amazon Bedrock (InvokeModel) <-> OpenAI's embeddings list. Pure, no I/O.

Two model families, told apart by the model id: Amazon Titan text embeddings
(`amazon.titan-embed-*`: one `inputText` per call, `dimensions`, token count in the answer)
and Cohere Embed on Bedrock (`cohere.embed-*`: up to 96 `texts` per call, `input_type`;
no token count in the answer, so usage is unknown and the reservation is booked). The
adapter (`providers.bedrock`) signs and sends; the API layer splits `input` into as many
calls as `inputs_per_request` says and joins the answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmgate_contract.config import Provider, Target

from llmgate_sidecar.upstream.providers import chat, embedding
from llmgate_sidecar.upstream.providers.base import Usage

COHERE_BATCH = 96  # Cohere Embed's most texts per request


def is_cohere(model: str) -> bool:
    return "cohere.embed" in model


def inputs_per_request(model: str) -> int:
    return COHERE_BATCH if is_cohere(model) else 1


def request_body(body: Mapping[str, Any], model: str) -> dict[str, Any]:
    texts = embedding.texts(body, "bedrock")
    if is_cohere(model):
        upstream: dict[str, Any] = {
            "texts": texts, "input_type": body.get("input_type") or "search_document",
            "embedding_types": ["float"]}
        if body.get("dimensions"):
            upstream["output_dimension"] = body["dimensions"]
        return upstream
    if len(texts) != 1:  # the API layer splits; a second input here is a bug upstream of us
        raise ValueError("Titan embeddings take one input per request")
    titan: dict[str, Any] = {"inputText": texts[0]}
    if body.get("dimensions"):
        titan["dimensions"] = body["dimensions"]
    return titan


def response(payload: bytes, target: Target, body: Mapping[str, Any],
             provider: Provider) -> tuple[bytes, Usage]:
    data = chat.load_object(payload, provider, target, "embeddings response")
    if is_cohere(target.model):
        vectors = data.get("embeddings")
        if isinstance(vectors, dict):  # with embedding_types: {"float": [...]}
            vectors = vectors.get("float")
        if not isinstance(vectors, list):
            raise chat.malformed(provider, target, "embeddings response has no embeddings")
        usage = Usage()
    else:
        vectors = [data.get("embedding")]
        tokens = data.get("inputTextTokenCount")
        usage = Usage(prompt_tokens=int(tokens), known=True) if isinstance(tokens, int) \
            else Usage()
    return embedding.openai_list(vectors, body, target.model, usage, provider, target), usage
