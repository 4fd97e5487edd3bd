"""The built-in `mock` provider serves each endpoint in its real shape, through the official
openai SDK: deterministic unit-length embeddings of the model's dimension (float and
base64), legacy completions (JSON and streamed), chat tool calls when `tool_choice` asks,
JSON that validates against `response_format`'s schema, and Responses; the paths it cannot
serve are a 400 in OpenAI's envelope, never a 200 of the wrong shape."""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import openai
import orjson
import pytest

from tests.sidecar.harness import Gateway, provider, route, start_gateway, virtual_key
from tests.sidecar.providers.e2e import client

SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "required": ["city", "days", "tags", "unit", "when"],
    "properties": {
        "city": {"type": "string", "minLength": 6},
        "days": {"type": "integer", "minimum": 3},
        "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}, "minItems": 2},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "when": {"anyOf": [{"type": "null"}, {"type": "string"}]}},
    "$defs": {"tag": {"type": "object", "required": ["name"],
                      "properties": {"name": {"type": "string"},
                                     "score": {"type": "number", "minimum": 0.5}}}}}
TOOLS: list[Any] = [{"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "required": ["city"],
                                          "properties": {"city": {"type": "string"}}}}},
    {"type": "function", "function": {
        "name": "book", "parameters": SCHEMA}}]


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    gw = await start_gateway(tmp_path, [
        provider("mock", "mock", mock={"wordsPerChunk": 1}),
        route("chat", [{"provider": "mock", "model": "mock-1"}]),
        route("text-embedding-3-large", [{"provider": "mock",
                                          "model": "text-embedding-3-large"}]),
        route("embed-small", [{"provider": "mock", "model": "text-embedding-3-small"}]),
        virtual_key("team", secretName="team-key")])
    yield gw
    await gw.close()


async def test_embeddings_are_deterministic_unit_vectors_of_the_models_size(
        gateway: Gateway) -> None:
    async with client(gateway) as c:
        large = await c.embeddings.create(model="text-embedding-3-large",
                                          input=["a cat", "a dog"])
        again = await c.embeddings.create(model="text-embedding-3-large", input="a cat")
        small = await c.embeddings.create(model="embed-small", input="a cat", dimensions=256)
        raw = await c.embeddings.with_raw_response.create(model="embed-small", input="a cat",
                                                          encoding_format="base64")
    assert [len(d.embedding) for d in large.data] == [3072, 3072]
    assert large.data[0].embedding == again.data[0].embedding
    assert large.data[0].embedding != large.data[1].embedding
    assert math.isclose(sum(v * v for v in large.data[0].embedding), 1.0, rel_tol=1e-9)
    assert len(small.data[0].embedding) == 256
    assert large.usage.prompt_tokens == 4
    packed = orjson.loads(raw.content)["data"][0]["embedding"]
    assert len(struct.unpack("<1536f", base64.b64decode(packed))) == 1536


async def test_completions_plain_and_streamed(gateway: Gateway) -> None:
    async with client(gateway) as c:
        result = await c.completions.create(model="chat", prompt="Once upon a time")
        stream = await c.completions.create(model="chat", prompt="Once upon a time",
                                            stream=True)
        pieces = [chunk async for chunk in stream]
    assert result.object == "text_completion"
    assert "Once upon a time" in result.choices[0].text
    assert result.usage is not None and result.usage.prompt_tokens == 4
    assert "".join(p.choices[0].text for p in pieces) == result.choices[0].text
    assert pieces[-1].choices[0].finish_reason == "stop"


async def test_tool_calls_when_tool_choice_asks(gateway: Gateway) -> None:
    messages: list[Any] = [{"role": "user", "content": "book it"}]
    async with client(gateway) as c:
        auto = await c.chat.completions.create(model="chat", messages=messages, tools=TOOLS)
        named = await c.chat.completions.create(
            model="chat", messages=messages, tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "book"}})
        stream = await c.chat.completions.create(model="chat", messages=messages, tools=TOOLS,
                                                 tool_choice="required", stream=True)
        chunks = [chunk async for chunk in stream]
    assert auto.choices[0].message.tool_calls is None and auto.choices[0].message.content
    call = named.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert named.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "book"  # type: ignore[union-attr]
    jsonschema.validate(orjson.loads(call.function.arguments), SCHEMA)  # type: ignore[union-attr]
    deltas = [tc for ch in chunks if ch.choices for tc in ch.choices[0].delta.tool_calls or []]
    assert deltas[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert orjson.loads("".join(d.function.arguments or "" for d in deltas
                                if d.function)) == {"city": "mock"}
    assert chunks[-1].choices == [] or chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_json_matches_the_response_format_schema(gateway: Gateway) -> None:
    messages: list[Any] = [{"role": "user", "content": "plan a trip"}]
    async with client(gateway) as c:
        result = await c.chat.completions.create(model="chat", messages=messages,
                                                 response_format={"type": "json_schema",
                                                                  "json_schema": {
                                                                      "name": "trip",
                                                                      "schema": SCHEMA}})
        loose = await c.chat.completions.create(model="chat", messages=messages,
                                                response_format={"type": "json_object"})
        answer = await c.responses.create(model="chat", input="plan a trip", text={
            "format": {"type": "json_schema", "name": "trip", "schema": SCHEMA}})
    jsonschema.validate(orjson.loads(result.choices[0].message.content or ""), SCHEMA)
    assert isinstance(orjson.loads(loose.choices[0].message.content or ""), dict)
    jsonschema.validate(orjson.loads(answer.output_text), SCHEMA)


@pytest.mark.parametrize(("call", "path"), [
    (lambda c: c.images.generate(model="chat", prompt="a cat"), "/v1/images/generations"),
    (lambda c: c.moderations.create(model="chat", input="hi"), "/v1/moderations"),
    (lambda c: c.audio.speech.create(model="chat", input="hi", voice="alloy"),
     "/v1/audio/speech"),
    (lambda c: c.responses.create(model="chat", input="hi", previous_response_id="resp_1"),
     "/v1/responses"),
])
async def test_paths_the_mock_cannot_serve_are_a_400(gateway: Gateway, call: Any,
                                                     path: str) -> None:
    async with client(gateway) as c:
        with pytest.raises(openai.BadRequestError) as info:
            await call(c)
    body: Any = info.value.body
    assert body["code"] == "passthrough_not_supported" and body["param"] == "model"
    assert path in body["message"] and "mock (mock)" in body["message"]
