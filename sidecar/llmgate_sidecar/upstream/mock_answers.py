"""What the built-in `mock` model answers, as pure functions of the request: no I/O, no clock.

`upstream.mock` (the in-process transport) calls these to build each endpoint's answer in
its OpenAI shape: the text reply, a tool call when tools are offered and `tool_choice` asks
for one, JSON that satisfies `response_format` (a JSON schema, or any JSON object),
deterministic unit-length embeddings of the model's dimension, and legacy completions.
The same request always gets the same answer.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from collections.abc import Mapping
from typing import Any

import orjson
from llmgate_contract.config import MockOptions

# Output dimension of OpenAI's embedding models; any other model gets DEFAULT_DIMENSIONS.
DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072,
              "text-embedding-ada-002": 1536}
DEFAULT_DIMENSIONS = 1536
_MAX_DEPTH = 8  # nested schemas deeper than this get null (a recursive $ref ends here)


def count_tokens(text: str) -> int:
    return max(1, len(text.split()))


def reply_for(body: Mapping[str, Any], options: MockOptions) -> str:
    """The configured reply, else an echo of the last user message (at most 40 words)."""
    if options.reply is not None:
        return options.reply
    text = ""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            text = str(content or "")
            break
    words = text.split()
    echo = " ".join(words[:40]) + (" …" if len(words) > 40 else "")
    return f"This is the llmgate mock model. You said: {echo}" if echo else \
        "This is the llmgate mock model."


def content_for(body: Mapping[str, Any], options: MockOptions) -> str:
    """The assistant's content: JSON when `response_format` asks for it, else the reply."""
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_schema":
        assert isinstance(fmt, dict)
        spec = fmt.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return orjson.dumps(instance(schema if isinstance(schema, dict) else {})).decode()
    if kind == "json_object":
        return orjson.dumps({"reply": reply_for(body, options)}).decode()
    return reply_for(body, options)


def tool_call(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The call to make when tools are offered and `tool_choice` asks for one ("required",
    or a named function), with arguments that satisfy that function's parameter schema."""
    tools: list[dict[str, Any]] = [t["function"] for t in body.get("tools") or []
                                   if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    choice = body.get("tool_choice")
    if not tools or choice in (None, "auto", "none"):
        return None
    function = tools[0]
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        function = next((f for f in tools if f.get("name") == wanted), function)
    arguments = instance(function.get("parameters") or {"type": "object"})
    digest = hashlib.sha256(orjson.dumps(arguments) + str(function.get("name")).encode())
    return {"id": f"call_mock_{digest.hexdigest()[:16]}", "type": "function",
            "function": {"name": str(function.get("name", "")),
                         "arguments": orjson.dumps(arguments).decode()}}


def instance(schema: Mapping[str, Any], root: Mapping[str, Any] | None = None,
             depth: int = 0) -> Any:
    """A deterministic value that satisfies `schema` (the JSON Schema subset structured
    outputs use: type, properties, required, items, enum, const, anyOf/oneOf/allOf, $ref,
    minimum, minItems, minLength)."""
    root = root if root is not None else schema
    if depth > _MAX_DEPTH:
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        return instance(target if isinstance(target, Mapping) else {}, root, depth + 1)
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return instance(schema[key][0], root, depth + 1)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged.update(part)
        return instance(merged, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    return _typed(str(kind), schema, root, depth)


def _typed(kind: str, schema: Mapping[str, Any], root: Mapping[str, Any], depth: int) -> Any:
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: instance(sub, root, depth + 1) for name, sub in properties.items()
                if isinstance(sub, Mapping)}
    if kind == "array":
        items = schema.get("items")
        count = max(1, int(schema.get("minItems") or 0))
        return [instance(items if isinstance(items, Mapping) else {}, root, depth + 1)
                for _ in range(count)]
    if kind == "integer":
        return math.ceil(schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1))
    if kind == "number":
        return float(schema.get("minimum", 0))
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    text = "mock"
    return text.ljust(int(schema.get("minLength") or 0), "k")


def embedding(text: str, dimensions: int) -> list[float]:
    """A unit vector determined by `text`: the same input always gets the same vector."""
    values: list[float] = []
    counter = 0
    while len(values) < dimensions:
        block = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        values.extend(v / 2**31 - 1.0 for v in struct.unpack("<8I", block))
        counter += 1
    del values[dimensions:]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def dimensions_for(body: Mapping[str, Any]) -> int:
    asked = body.get("dimensions")
    if isinstance(asked, int) and not isinstance(asked, bool) and asked > 0:
        return asked
    return DIMENSIONS.get(str(body.get("model")), DEFAULT_DIMENSIONS)


def embeddings(body: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI's embeddings list for `input` (a string or strings), float or base64."""
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else [str(x) for x in raw or []]
    size = dimensions_for(body)
    data = []
    for i, text in enumerate(inputs):
        vector: Any = embedding(text, size)
        if body.get("encoding_format") == "base64":
            vector = base64.b64encode(struct.pack(f"<{size}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": vector})
    tokens = sum(count_tokens(text) for text in inputs)
    return {"object": "list", "data": data, "model": body.get("model", "mock"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def completion_text(body: Mapping[str, Any], options: MockOptions) -> tuple[str, int]:
    """Legacy completions: (the text, prompt tokens) for `prompt` (a string or strings)."""
    prompt = body.get("prompt")
    # Any JSON can arrive here (the gateway forwards `prompt` unchecked): never raise on it.
    if isinstance(prompt, list):
        prompts = [str(p) for p in prompt]
    else:
        prompts = [] if prompt is None else [prompt if isinstance(prompt, str) else str(prompt)]
    if options.reply is not None:
        text = options.reply
    else:
        words = " ".join(prompts).split()
        text = " This is the llmgate mock model." + (
            f" You wrote: {' '.join(words[:40])}" if words else "")
    return text, sum(count_tokens(p) for p in prompts) or 1
