"""Shared pieces of the embeddings translations: inputs in, OpenAI's embeddings list out.

Used by the adapters that translate embeddings (gemini, cohere); the OpenAI family and
Azure forward the body as it is. `encoding_format: base64` (the openai SDK's default) is
honoured by packing little-endian float32, exactly as OpenAI does. Pure, no I/O.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping
from typing import Any

import orjson
from llmgate_contract.config import Provider, Target

from llmgate_sidecar.errors import BadRequest
from llmgate_sidecar.upstream.providers import chat
from llmgate_sidecar.upstream.providers.base import Usage


def texts(body: Mapping[str, Any], provider_kind: str) -> list[str]:
    """`input` as a list of strings; token-id inputs only OpenAI itself understands."""
    value = body.get("input")
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(t, str) for t in items):
        raise BadRequest(f"'input' must be a string or an array of strings for provider "
                         f"{provider_kind} (token arrays are OpenAI-only)", param="input",
                         code="invalid_type")
    return list(items)


def vector(values: list[float], encoding_format: Any) -> Any:
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
    return values


def openai_list(vectors: list[Any], body: Mapping[str, Any], model: str, usage: Usage,
                provider: Provider, target: Target) -> bytes:
    """The OpenAI `list` of embeddings; a vector that is not a list of numbers is malformed."""
    encoding = body.get("encoding_format")
    data = []
    for i, values in enumerate(vectors):
        if not isinstance(values, list) or not all(isinstance(v, int | float) for v in values):
            raise chat.malformed(provider, target, f"embedding {i} is not a list of numbers")
        data.append({"object": "embedding", "index": i, "embedding": vector(values, encoding)})
    return orjson.dumps({"object": "list", "data": data, "model": model,
                         "usage": {"prompt_tokens": usage.prompt_tokens,
                                   "total_tokens": usage.prompt_tokens}})


def answer_list(payload: bytes, provider: Provider, target: Target,
                key: str) -> tuple[dict[str, Any], list[Any]]:
    """(an embeddings answer's JSON object, the list under `key` in it); an answer that is
    not an object with that list is malformed."""
    data = chat.load_object(payload, provider, target, "embeddings response")
    items = data.get(key)
    if not isinstance(items, list):
        raise chat.malformed(provider, target, f"embeddings response has no {key} list")
    return data, items


def openai_usage(payload: bytes, provider: Provider, target: Target) -> Usage:
    """Usage of an OpenAI-shaped embeddings answer (which is forwarded as it came)."""
    data, _ = answer_list(payload, provider, target, "data")
    usage = data.get("usage")
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return Usage(prompt_tokens=int(tokens or 0), known=isinstance(tokens, int))
